"""The worker Job of one attempt (seed 000's Job spec template, seed 001's worker environment).

Rendered as the plain dict the API server receives (camelCase), so the same object is written as an
artifact, validated against the Kubernetes schema in the tests, and sent by the ``kubernetes`` client.
"""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

from leviathan_dagster.core.executors.base import AttemptSpec
from leviathan_dagster.core.executors.k8s.security import (
    CONFINEMENT_ENV,
    confinement_summary,
    worker_container_confinement,
)
from leviathan_dagster.core.models import KubernetesSettings, ResourceRequests

WORKSPACE_MOUNT = "/workspace"
CONFIG_MOUNT = "/etc/leviathan"
CONTAINER_NAME = "worker"
WORKER_COMMAND = ("python", "-m", "worker")
# A fixed non-root uid/gid; the Dockerfile creates the same user, so files in /workspace are its own.
WORKER_UID = 10001
# env var -> key in the Secret (seed 001). Optional so a deployment without, say, Claude still starts:
# the worker then fails the attempt itself with a clear message instead of the pod never starting.
SECRET_ENV = {
    "CONTROL_PLANE_TOKEN": "control-plane-token",
    "GITHUB_TOKEN": "github-token",
    # A GitHub App instead of a token (github.app_id in leviathan.yaml): the worker exchanges it.
    "GITHUB_APP_PRIVATE_KEY": "github-app-private-key",
    "LEVIATHAN_CLAUDE_API_KEY": "claude-api-key",
    "LEVIATHAN_CLAUDE_MODEL": "claude-model",
}
_MAX_NAME = 63
_LABEL_VALUE_RE = re.compile(r"[^A-Za-z0-9._-]")


def job_name(attempt_id: str) -> str:
    """``leviathan-attempt-<id>``, DNS-1123 safe (attempt ids are ``attempt-<hex>`` already)."""
    suffix = attempt_id.removeprefix("attempt-")
    name = re.sub(r"[^a-z0-9-]+", "-", f"leviathan-attempt-{suffix}".lower()).strip("-")
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(attempt_id.encode()).hexdigest()[:10]
        name = f"{name[: _MAX_NAME - 11].rstrip('-')}-{digest}"
    return name


def label_value(value: str) -> str:
    """A label value: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends (ids can be longer)."""
    cleaned = _LABEL_VALUE_RE.sub("-", value)
    if len(cleaned) > _MAX_NAME:
        cleaned = f"{cleaned[:52]}-{hashlib.sha256(value.encode()).hexdigest()[:10]}"
    return cleaned.strip("-._")


def job_labels(spec: AttemptSpec) -> dict[str, str]:
    return {
        "app": "leviathan",
        "target": label_value(spec.target.id),
        "task": label_value(spec.task_id),
        "attempt": label_value(spec.attempt_id),
    }


def container_resources(resources: ResourceRequests | None) -> dict[str, dict[str, str]]:
    """Requests as asked; memory also as the limit (a worker over its memory is OOM-killed, not its
    neighbours), and no CPU limit (throttling only slows tests down and helps nobody)."""
    if resources is None:
        return {}
    requests = {k: v for k, v in (("cpu", resources.cpu), ("memory", resources.memory)) if v}
    limits = {"memory": resources.memory} if resources.memory else {}
    return {"requests": requests, **({"limits": limits} if limits else {})}


def worker_env(
    spec: AttemptSpec, settings: KubernetesSettings, worker_token: str | None = None
) -> list[dict[str, Any]]:
    """The worker contract, then the credentials from the Secret. ``worker_token``: this attempt's own
    control-plane token (minted by the executor), given instead of the Secret's shared one."""
    plain = spec.worker_environment()
    plain["LEVIATHAN_WORKSPACE_DIR"] = WORKSPACE_MOUNT
    # git, Python and tempfile write below HOME and TMPDIR; the root filesystem is read-only.
    plain["HOME"] = WORKSPACE_MOUNT
    plain["TMPDIR"] = WORKSPACE_MOUNT
    if settings.config_map:
        plain["LEVIATHAN_CONFIG"] = f"{CONFIG_MOUNT}/leviathan.yaml"
    if settings.control_plane_url:
        plain["CONTROL_PLANE_URL"] = settings.control_plane_url
    plain[CONFINEMENT_ENV] = confinement_summary(settings)
    if worker_token:
        plain["CONTROL_PLANE_TOKEN"] = worker_token
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain.items()]
    for name, key in SECRET_ENV.items():
        if name == "CONTROL_PLANE_TOKEN" and worker_token:
            continue
        # The token is required once a control plane is named: without it every event post would fail.
        optional = not (name == "CONTROL_PLANE_TOKEN" and settings.control_plane_url)
        ref = {"name": settings.secret_name, "key": key, "optional": optional}
        env.append({"name": name, "valueFrom": {"secretKeyRef": ref}})
    return env


def render_job(
    spec: AttemptSpec,
    settings: KubernetesSettings,
    resources: ResourceRequests | None = None,
    *,
    worker_token: str | None = None,
) -> dict[str, Any]:
    """The batch/v1 Job that runs ``python -m worker`` for ``spec``."""
    labels = job_labels(spec)
    mounts: list[dict[str, Any]] = [{"name": "workspace", "mountPath": WORKSPACE_MOUNT}]
    volumes: list[dict[str, Any]] = [{"name": "workspace", "emptyDir": {}}]
    # LEVIATHAN_HOME must be writable under the read-only root filesystem: the worker keeps its
    # artifacts there. Without a shared claim it is the pod's own emptyDir: the artifacts go with the
    # pod, their SHA-256 manifest is in the worker's events, and the run pod keeps the pod log.
    mounts.append({"name": "home", "mountPath": str(spec.home.root)})
    if settings.home_volume_claim:
        volumes.append({"name": "home", "persistentVolumeClaim": {"claimName": settings.home_volume_claim}})
    else:
        volumes.append({"name": "home", "emptyDir": {}})
    if settings.config_map:
        mounts.append({"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True})
        volumes.append({"name": "config", "configMap": {"name": settings.config_map}})
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(WORKER_COMMAND),
        "env": worker_env(spec, settings, worker_token),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            # The sandbox's namespaces need these profiles (k8s_security.py); set on the container,
            # not the pod, so nothing else in the pod (the runtime's pause sandbox) is loosened.
            **worker_container_confinement(settings),
        },
    }
    if resources is not None:
        container["resources"] = container_resources(resources)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(spec.attempt_id), "namespace": settings.namespace, "labels": labels},
        "spec": {
            # Never retried by Kubernetes: Leviathan's scheduler decides about retries (seed 000).
            "backoffLimit": 0,
            "activeDeadlineSeconds": spec.target.policy.attempt_timeout_seconds
            + settings.deadline_grace_seconds,
            "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": settings.service_account,
                    # The worker never talks to the Kubernetes API; it gets no token to do so.
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": WORKER_UID,
                        "runAsGroup": WORKER_UID,
                        "fsGroup": WORKER_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    **({} if settings.worker_host_users else {"hostUsers": False}),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


WORKER_TOKEN_PLACEHOLDER = "<this attempt's worker token: not recorded>"


def without_worker_token(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as recorded in the attempt's artifact: a minted worker token replaced by a placeholder."""
    recorded = copy.deepcopy(body)
    for container in recorded["spec"]["template"]["spec"]["containers"]:
        for entry in container.get("env", []):
            if entry["name"] == "CONTROL_PLANE_TOKEN" and "value" in entry:
                entry["value"] = WORKER_TOKEN_PLACEHOLDER
    return recorded
