"""``k8s``: one worker Job per attempt (seed 000), through the official ``kubernetes`` client.

Create the Job → poll it until it has finished (or its pod never starts) → keep the pod log as an
artifact → map the Job's status to how the attempt ended. The worker records its own outcome; what
this executor reports only matters when the worker could not: a pod killed by its deadline, evicted,
OOM-killed, never scheduled, or a Job deleted under it. Those are ``infrastructure`` failures — the
attempt does not count against the task and is tried again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from leviathan_dagster.core.attempts.ledger import INFRASTRUCTURE
from leviathan_dagster.core.errors import LeviathanError, TransientError
from leviathan_dagster.core.events.access import mint_worker_token, worker_key_from
from leviathan_dagster.core.executors.base import AttemptSpec, ExecutionResult, Executor, log_tail
from leviathan_dagster.core.executors.k8s.api import JobState, KubernetesApi, PodState
from leviathan_dagster.core.executors.k8s.job import job_name, render_job, without_worker_token
from leviathan_dagster.core.executors.k8s.stub import resolve_resources, validate_job, write_job_artifact
from leviathan_dagster.core.models import KubernetesSettings
from leviathan_dagster.core.redaction import register_secret

POD_LOG_ARTIFACT = "k8s-pod.log"
POLL_SECONDS = 2.0
# Seconds past activeDeadlineSeconds (+ start timeout) before the executor stops waiting for the API
# server to report the Job finished: covers a controller that is slow to mark it, never an endless wait.
GIVE_UP_MARGIN_SECONDS = 120
# An API server that does not answer (restarting, overloaded, a network partition) says nothing about
# the Job: its reads are retried with capped, jittered backoff until a definite answer arrives or the
# Job's own deadline has long passed. Only a definite answer (finished, deleted, never started) ends
# the wait, so a blip never makes the executor delete a Job that is still running.
READ_BACKOFF_INITIAL_SECONDS = 1.0
READ_BACKOFF_MAX_SECONDS = 30.0
# The pod log is read once the Job has ended; an API server that stays away this long leaves it empty.
LOG_READ_SECONDS = 120
T = TypeVar("T")


@dataclass(frozen=True)
class _Ended:
    job: JobState | None  # None: deleted under us
    pod: PodState | None
    never_started: bool = False


class K8sExecutor(Executor):
    name = "k8s"

    def __init__(
        self,
        settings: KubernetesSettings | None = None,
        *,
        worker_key_env: str | None = None,
        api: Callable[[KubernetesSettings], KubernetesApi] = KubernetesApi,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.settings = settings or KubernetesSettings()
        # control_plane.worker_token_key: with it (and a control plane URL) each worker gets a token
        # of its own attempt instead of the Secret's shared control-plane-token.
        self.worker_key_env = worker_key_env
        self._make_api = api
        self.poll_seconds = poll_seconds

    def run(self, spec: AttemptSpec) -> ExecutionResult:
        token = self._worker_token(spec.attempt_id)
        body = render_job(spec, self.settings, resolve_resources(spec), worker_token=token)
        validate_job(body)
        write_job_artifact(spec, without_worker_token(body))
        name = body["metadata"]["name"]
        api = self._make_api(self.settings)
        try:
            api.create_job(body)
            ended = self._wait(api, name, body["spec"]["activeDeadlineSeconds"])
            log = self._collect_log(api, spec, ended.pod)
        finally:
            api.close()
        return _result(name, body["spec"]["activeDeadlineSeconds"], ended, log, self.settings)

    def _worker_token(self, attempt_id: str) -> str | None:
        """This attempt's own control-plane token, or None (no control plane, or no worker key: the
        worker then gets the Secret's shared token). Read from the environment per attempt, so a key
        missing from the run pod is this attempt's ``executor_error``, with the fix, not a crash."""
        if not (self.settings.control_plane_url and self.worker_key_env):
            return None
        key = worker_key_from(self.worker_key_env, os.environ)
        assert key is not None  # worker_key_from refuses a missing key when a name is configured
        token = mint_worker_token(key, attempt_id)
        # The token is in the Job's env (no Secret per attempt: the orchestrator may not touch
        # Secrets); it is redacted from every log and artifact this process writes.
        register_secret(token)
        return token

    def cancel(self, attempt_id: str) -> bool:
        """Delete the attempt's Job and its pod (the process is killed); False if there was none.

        The Job's name derives from the attempt id, so any process can cancel it (the operator's
        cancel op builds a fresh executor), not only the one that created it.
        """
        api = self._make_api(self.settings)
        try:
            return api.delete_job(job_name(attempt_id))
        finally:
            api.close()

    def cleanup(self, attempt_id: str) -> None:
        """Called after every attempt, also when the run was interrupted (cancelled in Dagster): a Job
        still running then is deleted. A finished Job stays for inspection until its TTL removes it."""
        try:
            api = self._make_api(self.settings)
            try:
                state = api.read_job(job_name(attempt_id))
            finally:
                api.close()
            if state is not None and state.finished is None:
                self.cancel(attempt_id)
        except LeviathanError:
            # Cleanup runs in ``finally`` and must not hide how the attempt ended. A Job left behind
            # is still bounded: activeDeadlineSeconds kills it, ttlSecondsAfterFinished removes it.
            pass

    def _wait(self, api: KubernetesApi, name: str, deadline_seconds: int) -> _Ended:
        created = time.monotonic()
        give_up = created + deadline_seconds + self.settings.start_timeout_seconds + GIVE_UP_MARGIN_SECONDS
        started = False
        while True:
            job = self._read(lambda: api.read_job(name), give_up)
            pods = self._read(lambda: api.job_pods(name), give_up) if job is not None else []
            pod = pods[0] if pods else None
            if job is None or job.finished:
                return _Ended(job, pod)
            started = started or (pod is not None and pod.phase != "Pending")
            waited = time.monotonic() - created
            if (not started and waited > self.settings.start_timeout_seconds) or time.monotonic() > give_up:
                api.delete_job(name)
                return _Ended(job, pod, never_started=not started)
            time.sleep(self.poll_seconds)

    def _read(self, call: Callable[[], T], give_up: float) -> T:
        """``call()``, retried while the API server gives no answer (TransientError) until ``give_up``
        (a monotonic time); then the last TransientError is raised."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientError),
            wait=tenacity.wait_exponential_jitter(
                initial=READ_BACKOFF_INITIAL_SECONDS, max=READ_BACKOFF_MAX_SECONDS
            ),
            stop=lambda _state: time.monotonic() >= give_up,
            reraise=True,
        )
        return retrying(call)

    def _collect_log(self, api: KubernetesApi, spec: AttemptSpec, pod: PodState | None) -> str:
        try:
            give_up = time.monotonic() + LOG_READ_SECONDS
            log = self._read(lambda: api.pod_log(pod.name), give_up) if pod is not None else ""
        except TransientError as exc:  # the outcome is the worker's events; the log is only evidence
            log = f"[pod log not read: {exc}]"
        folder = spec.home.artifacts_dir(spec.attempt_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / POD_LOG_ARTIFACT).write_text(log, encoding="utf-8")
        return log


def _result(
    name: str, deadline: int, ended: _Ended, log: str, settings: KubernetesSettings
) -> ExecutionResult:
    pod, job = ended.pod, ended.job
    if ended.never_started:
        why = f"{pod.waiting_reason}: {pod.waiting_message}" if pod and pod.waiting_reason else "no pod"
        return _infrastructure(
            f"Job {name}: pod did not start within start_timeout_seconds={settings.start_timeout_seconds} "
            f"({why}); Job deleted"
        )
    if job is None:
        return _infrastructure(f"Job {name} was deleted before it finished (cancelled or removed)", log)
    if job.finished is None:
        return _infrastructure(f"Job {name} did not finish; given up and deleted", log)
    if job.reason == "DeadlineExceeded":
        return _infrastructure(
            f"Job {name} exceeded activeDeadlineSeconds={deadline} "
            "(attempt_timeout_seconds + deadline_grace_seconds); Kubernetes killed its pod",
            timed_out=True,
        )
    exit_code = pod.exit_code if pod else None
    killed = pod is not None and (pod.terminated_reason == "OOMKilled" or (exit_code or 0) >= 128)
    if job.finished == "Failed" and pod is not None and exit_code is None and pod.reason:
        # The kubelet refused to run the pod at all (its admission: an AppArmor profile not loaded).
        return _infrastructure(
            f"Job {name}: the node refused the worker pod ({pod.reason}: {pod.message}); "
            "docs/operations-runbook.md lists the fixes"
        )
    if job.finished == "Failed" and killed:
        return _infrastructure(f"Job {name}: worker killed ({pod.terminated_reason}, exit {exit_code})", log)
    # The worker ran to its end: it recorded the outcome itself (exit codes in docs/worker.md).
    return ExecutionResult(exit_code, False, log_tail(log))


def _infrastructure(headline: str, log: str = "", *, timed_out: bool = False) -> ExecutionResult:
    return ExecutionResult(None, timed_out, log_tail(log, headline=headline), INFRASTRUCTURE)
