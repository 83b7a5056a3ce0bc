"""The one place that talks to the Kubernetes API (official ``kubernetes`` client).

Returns Leviathan's own frozen types (JobState, PodState), never the client's models, and translates
the client's errors once: refusals that would fail the same way again (bad credentials, no such
namespace, RBAC, an invalid Job) become ConfigError; the API server being unreachable, overloaded or
restarting becomes TransientError (an ``infrastructure`` failure, which does not count).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from leviathan_dagster.core.errors import ConfigError, ConflictError, NotFoundError, TransientError
from leviathan_dagster.core.models import KubernetesSettings

# (connect, read) seconds per API call: a hung API server is an infrastructure failure, not a hang.
REQUEST_TIMEOUT = (5.0, 30.0)
# Idempotent calls (GET, DELETE) are retried by urllib3 on these; creating a Job is not retried blindly.
RETRY = urllib3.Retry(total=3, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504))
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# The pod log kept as the attempt's artifact: its LAST 4 MiB (the end says how the worker finished).
LOG_LIMIT_BYTES = 4 * 1024 * 1024
LOG_CHUNK_BYTES = 64 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class JobState:
    active: int
    succeeded: int
    failed: int
    # "Complete" or "Failed" once the Job has finished (its terminal condition), else None.
    finished: str | None
    reason: str | None = None  # e.g. DeadlineExceeded, BackoffLimitExceeded
    message: str | None = None


@dataclass(frozen=True)
class PodState:
    name: str
    phase: str  # Pending, Running, Succeeded, Failed, Unknown
    waiting_reason: str | None = None  # e.g. Unschedulable, CreateContainerConfigError, ImagePullBackOff
    waiting_message: str | None = None
    exit_code: int | None = None
    terminated_reason: str | None = None  # e.g. Completed, Error, OOMKilled
    # The pod's own status reason/message: a pod the kubelet refused to run (e.g. AppArmor) has these
    # and no container status.
    reason: str | None = None
    message: str | None = None


@contextmanager
def translated(action: str) -> Iterator[None]:
    try:
        yield
    except ApiException as exc:
        detail = f"Kubernetes API: {action} failed: HTTP {exc.status} {exc.reason}"
        if exc.status in _TRANSIENT_STATUS or exc.status == 0:
            raise TransientError(detail) from None
        if exc.status == 404:
            raise NotFoundError(detail) from None
        if exc.status == 409:
            raise ConflictError(detail) from None
        raise ConfigError(f"{detail}. Fix: check the kubernetes: section (namespace, RBAC, image)") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise TransientError(f"Kubernetes API: {action} failed: {type(exc).__name__}: {exc}") from None


def api_client(settings: KubernetesSettings) -> kubernetes.client.ApiClient:
    """A client of its own (never the process-global configuration, which dagster-k8s also sets)."""
    configuration = kubernetes.client.Configuration()
    try:
        if settings.kubeconfig or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            path = settings.kubeconfig or str(Path("~/.kube/config").expanduser())
            kubernetes.config.load_kube_config(config_file=path, client_configuration=configuration)
        else:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise ConfigError(
            f"kubernetes: cannot load the cluster credentials: {exc}. Fix: set kubernetes.kubeconfig, "
            "or run inside the cluster with a service account"
        ) from None
    configuration.retries = RETRY
    return kubernetes.client.ApiClient(configuration)


class KubernetesApi:
    """The calls the ``k8s`` executor makes (RBAC: jobs create/get/delete, pods list, pods/log get)."""

    def __init__(self, settings: KubernetesSettings, client: kubernetes.client.ApiClient | None = None):
        self.namespace = settings.namespace
        self.client = client or api_client(settings)
        self.batch = kubernetes.client.BatchV1Api(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)

    def close(self) -> None:
        self.client.close()

    def create_job(self, body: dict[str, Any]) -> None:
        try:
            self._call("create Job", self.batch.create_namespaced_job, self.namespace, body)
        except NotFoundError as exc:  # only the namespace can be missing when creating
            raise ConfigError(
                f"{exc} (namespace {self.namespace!r}). Fix: set kubernetes.namespace"
            ) from None

    def read_job(self, name: str) -> JobState | None:
        """The Job's state, or None if it does not exist (deleted, or expired by its TTL)."""
        try:
            job = self._call("read Job", self.batch.read_namespaced_job_status, name, self.namespace)
        except NotFoundError:
            return None
        status = job.status
        finished = next(
            (c for c in status.conditions or () if c.type in ("Complete", "Failed") and c.status == "True"),
            None,
        )
        return JobState(
            active=status.active or 0,
            succeeded=status.succeeded or 0,
            failed=status.failed or 0,
            finished=finished.type if finished else None,
            reason=finished.reason if finished else None,
            message=finished.message if finished else None,
        )

    def job_pods(self, name: str) -> list[PodState]:
        pods = self._call(
            "list pods", self.core.list_namespaced_pod, self.namespace, label_selector=f"job-name={name}"
        )
        return [_pod_state(pod) for pod in pods.items]

    def pod_log(self, pod: str) -> str:
        """The last LOG_LIMIT_BYTES of the pod's log ("" if it has none), marked when cut.

        The API's ``limitBytes`` keeps the *first* bytes and there is no tail-by-bytes parameter, so
        the log is streamed and only its end kept: memory stays bounded whatever the worker printed
        (the kubelet's own log rotation bounds what is sent).
        """
        # Raw bytes, decoded here: with urllib3 2 the client turns a text/plain body into "b'...'".
        try:
            response = self._call(
                "read pod log", self.core.read_namespaced_pod_log, pod, self.namespace, _preload_content=False
            )
        except NotFoundError:
            return ""
        except ConfigError:  # 400: the container never started, so there is no log
            return ""
        kept, dropped = bytearray(), 0
        with translated("read pod log"):
            try:
                for chunk in response.stream(LOG_CHUNK_BYTES):
                    kept += chunk
                    if len(kept) > LOG_LIMIT_BYTES:
                        cut = len(kept) - LOG_LIMIT_BYTES
                        dropped += cut
                        del kept[:cut]
            finally:
                response.release_conn()
        if not dropped:
            return kept.decode("utf-8", errors="replace")
        # Start at a line boundary: the first kept line is usually cut in the middle.
        newline = kept.find(b"\n")
        if 0 <= newline < LOG_CHUNK_BYTES:
            dropped += newline + 1
            del kept[: newline + 1]
        return f"[first {dropped} bytes of the log not kept]\n" + kept.decode("utf-8", errors="replace")

    def delete_job(self, name: str) -> bool:
        """Delete the Job and its pods (Background propagation); False if it was already gone."""
        try:
            self._call(
                "delete Job",
                self.batch.delete_namespaced_job,
                name,
                self.namespace,
                propagation_policy="Background",
            )
        except NotFoundError:
            return False
        return True

    def _call(self, action: str, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with translated(action):
            return method(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)


def _pod_state(pod: Any) -> PodState:
    statuses = pod.status.container_statuses or []
    state = statuses[0].state if statuses else None
    waiting = state.waiting if state else None
    terminated = state.terminated if state else None
    if waiting is None and pod.status.phase == "Pending":
        # Not even a container status yet: the scheduler's verdict is in the PodScheduled condition.
        unscheduled = next(
            (c for c in pod.status.conditions or () if c.type == "PodScheduled" and c.status == "False"), None
        )
        if unscheduled is not None:
            return PodState(pod.metadata.name, "Pending", unscheduled.reason, unscheduled.message)
    return PodState(
        name=pod.metadata.name,
        phase=pod.status.phase or "Unknown",
        waiting_reason=waiting.reason if waiting else None,
        waiting_message=waiting.message if waiting else None,
        exit_code=terminated.exit_code if terminated else None,
        terminated_reason=terminated.reason if terminated else None,
        reason=pod.status.reason,
        message=pod.status.message,
    )
