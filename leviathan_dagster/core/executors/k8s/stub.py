"""``k8s-stub``: render and validate the attempt's worker Job, write it as an artifact, submit nothing.

For checking a target's Kubernetes settings (image, namespace, secrets, resources) before a cluster
exists. The attempt ends ``executor_error`` ("k8s-stub submits nothing"): nothing ran, so it is never
reported as a success.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes

from leviathan_dagster.core.attempts.ledger import EXECUTOR_ERROR
from leviathan_dagster.core.config.kubernetes import task_resources
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.executors.base import AttemptSpec, ExecutionResult, Executor
from leviathan_dagster.core.executors.k8s.job import render_job
from leviathan_dagster.core.models import KubernetesSettings, ResourceRequests
from leviathan_dagster.core.scheduling.cycle import read_backlog

JOB_ARTIFACT = "k8s-job.json"
_DNS_LABEL_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class _Payload:
    """What ``ApiClient.deserialize`` reads: the body as the API server would have returned it."""

    data: str


def resolve_resources(spec: AttemptSpec) -> ResourceRequests | None:
    """The task's own ``resources`` (backlog, base branch), else the target's ``resources:``."""
    snapshot = read_backlog(spec.target, spec.home)
    task = snapshot.backlog.get(spec.task_id) if snapshot.backlog else None
    own = task_resources(task.extra, spec.task_id) if task is not None else None
    return own or spec.target.resources


def validate_job(body: dict[str, Any]) -> None:
    """Raise ConfigError if the Job would be refused: the client's models check required fields and
    types; names and labels are checked against the API server's own patterns."""
    try:
        kubernetes.client.ApiClient().deserialize(_Payload(json.dumps(body)), "V1Job")
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the rendered worker Job is invalid: {exc}") from None
    name = body["metadata"]["name"]
    if not _DNS_LABEL_RE.match(name):
        raise ConfigError(f"the worker Job name {name!r} is not a DNS-1123 label")
    for key, value in body["metadata"]["labels"].items():
        if not _LABEL_VALUE_RE.match(value):
            raise ConfigError(f"the worker Job label {key}={value!r} is not a valid label value")


def write_job_artifact(spec: AttemptSpec, body: dict[str, Any]) -> Path:
    folder = spec.home.artifacts_dir(spec.attempt_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / JOB_ARTIFACT
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


class K8sStubExecutor(Executor):
    name = "k8s-stub"

    def __init__(self, settings: KubernetesSettings | None = None) -> None:
        self.settings = settings or KubernetesSettings()

    def run(self, spec: AttemptSpec) -> ExecutionResult:
        body = render_job(spec, self.settings, resolve_resources(spec))
        validate_job(body)
        path = write_job_artifact(spec, body)
        return ExecutionResult(
            None,
            False,
            f"k8s-stub submits nothing: Job {body['metadata']['name']} rendered and validated ({path})",
            EXECUTOR_ERROR,
        )
