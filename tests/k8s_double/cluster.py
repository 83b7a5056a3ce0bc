"""The cluster behind the Kubernetes API double: Jobs whose pods are local subprocesses.

Each Job gets one pod (``backoffLimit: 0`` is all Leviathan and dagster-k8s use). The pod "runs" the
container's command as a subprocess of this machine with exactly the container's environment
(``value`` and ``secretKeyRef`` entries, ``envFrom``), the image's PATH (the project's virtualenv) and
its volumes mapped to temporary folders (mount paths in env values and arguments are rewritten to
them). Status is reported the way the Job controller and kubelet would: the pod goes Pending →
Running → Succeeded/Failed, the Job gets ``active``/``succeeded``/``failed`` and a ``Complete`` or
``Failed`` condition (``DeadlineExceeded`` when ``activeDeadlineSeconds`` passes: the process is killed).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

VENV_BIN = str(Path(sys.executable).parent)
KILL_GRACE_SECONDS = 2.0


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MissingSecret(Exception):
    pass


@dataclass
class Pod:
    name: str
    namespace: str
    job: str
    labels: dict[str, str]
    image: str
    container: str
    created: str = field(default_factory=now)
    phase: str = "Pending"
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    exit_code: int | None = None
    terminated_reason: str | None = None
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    started: str | None = None
    kill_reason: str | None = None

    def to_api(self) -> dict[str, Any]:
        if self.exit_code is not None:
            state = {
                "terminated": {
                    "exitCode": self.exit_code,
                    "reason": self.terminated_reason,
                    "startedAt": self.started,
                    "finishedAt": now(),
                }
            }
        elif self.waiting is not None:
            state = {"waiting": {"reason": self.waiting[0], "message": self.waiting[1]}}
        else:
            state = {"running": {"startedAt": self.started}}
        status = {
            "phase": self.phase,
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": self.created}],
            "containerStatuses": [
                {
                    "name": self.container,
                    "image": self.image,
                    "imageID": f"docker.io/library/{self.image}@sha256:{'0' * 64}",
                    "ready": self.phase == "Running",
                    "restartCount": 0,
                    "started": self.phase == "Running",
                    "state": state,
                }
            ],
        }
        if self.started:
            status["startTime"] = self.started
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": self.labels,
                "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, self.name)),
                "creationTimestamp": self.created,
            },
            "spec": {"containers": [{"name": self.container, "image": self.image}], "restartPolicy": "Never"},
            "status": status,
        }


@dataclass
class Job:
    body: dict[str, Any]
    pod: Pod
    start_monotonic: float = field(default_factory=time.monotonic)
    finished: tuple[str, str, str] | None = None  # (type, reason, message)

    def to_api(self) -> dict[str, Any]:
        status: dict[str, Any] = {"startTime": self.body["metadata"]["creationTimestamp"]}
        if self.finished is None:
            status["active"] = 1
            status["ready"] = 1 if self.pod.phase == "Running" else 0
        else:
            kind, reason, message = self.finished
            status["succeeded" if kind == "Complete" else "failed"] = 1
            status["conditions"] = [
                {
                    "type": kind,
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastProbeTime": now(),
                    "lastTransitionTime": now(),
                }
            ]
            if kind == "Complete":
                status["completionTime"] = now()
        return {**self.body, "status": status}


class Cluster:
    """State of the fake cluster. ``secrets``/``config_maps``: name -> {key: value} per namespace-less
    store; ``images``: images that "exist" (anything else never pulls); ``claims``: PVC -> host dir."""

    def __init__(self, *, namespaces=("default", "leviathan"), images=(), secrets_=None, claims=None):
        self.namespaces = set(namespaces)
        self.images = set(images)
        self.secrets: dict[str, dict[str, str]] = dict(secrets_ or {})
        self.config_maps: dict[str, dict[str, str]] = {}
        self.claims: dict[str, str] = dict(claims or {})
        self.jobs: dict[tuple[str, str], Job] = {}
        self.lock = threading.RLock()
        self.root = Path(tempfile.mkdtemp(prefix="k8s-double-"))
        self.created_bodies: list[dict[str, Any]] = []

    # -- API operations -------------------------------------------------------------------------------
    def create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        meta = body["metadata"]
        meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now(), resourceVersion="1")
        template = body["spec"]["template"]
        container = template["spec"]["containers"][0]
        labels = {
            **template.get("metadata", {}).get("labels", {}),
            "job-name": name,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": meta["uid"],
        }
        pod = Pod(
            f"{name}-{secrets.token_hex(3)[:5]}",
            namespace,
            name,
            labels,
            container["image"],
            container["name"],
        )
        job = Job(body, pod)
        with self.lock:
            self.jobs[(namespace, name)] = job
            self.created_bodies.append(body)
        threading.Thread(target=self._run_pod, args=(job,), daemon=True).start()
        return job.to_api()

    def delete_job(self, namespace: str, name: str) -> Job | None:
        with self.lock:
            job = self.jobs.pop((namespace, name), None)
        if job is not None:
            self._stop(job.pod, "deleted")
        return job

    def pods(self, namespace: str, selector: dict[str, str]) -> list[Pod]:
        with self.lock:
            return [
                j.pod
                for (ns, _), j in self.jobs.items()
                if ns == namespace and all(j.pod.labels.get(k) == v for k, v in selector.items())
            ]

    def pod(self, namespace: str, name: str) -> Pod | None:
        return next((p for p in self.pods(namespace, {}) if p.name == name), None)

    # -- fault injection for tests --------------------------------------------------------------------
    def kill_pod(self, job_name: str, reason: str = "OOMKilled", namespace: str = "leviathan") -> None:
        """The node kills the container (OOM, eviction): SIGKILL, exit 137."""
        with self.lock:
            job = self.jobs[(namespace, job_name)]
        job.pod.kill_reason = reason
        self._stop(job.pod, reason, sig=signal.SIGKILL)

    def wait_until(self, predicate, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise TimeoutError("condition not reached in the Kubernetes double")
            time.sleep(0.05)

    def close(self) -> None:
        with self.lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            self._stop(job.pod, "shutdown", sig=signal.SIGKILL)

    # -- the kubelet ----------------------------------------------------------------------------------
    def _run_pod(self, job: Job) -> None:
        pod, spec = job.pod, job.body["spec"]["template"]["spec"]
        container = spec["containers"][0]
        if pod.image not in self.images:
            pod.waiting = ("ErrImagePull", f'failed to pull image "{pod.image}": not found')
            return
        try:
            env, rewrite = self._environment(container, spec.get("volumes", []), pod)
        except MissingSecret as exc:
            pod.waiting = ("CreateContainerConfigError", str(exc))
            return
        argv = [rewrite(a) for a in [*container.get("command", []), *container.get("args", [])]]
        argv[0] = sys.executable if argv[0] in ("python", "python3") else argv[0]
        pod.log_path = self.root / f"{pod.name}.log"
        with self.lock:
            if pod.kill_reason == "deleted":
                return
            log = open(pod.log_path, "wb")  # noqa: SIM115 - closed when the process ends
            pod.process = subprocess.Popen(
                argv, env=env, cwd=env["HOME"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            pod.phase, pod.waiting, pod.started = "Running", None, now()
        deadline = job.body["spec"].get("activeDeadlineSeconds")
        while pod.process.poll() is None:
            if deadline is not None and time.monotonic() - job.start_monotonic > deadline:
                pod.kill_reason = "DeadlineExceeded"
                self._stop(pod, "DeadlineExceeded")
            time.sleep(0.05)
        log.close()
        code = pod.process.returncode
        pod.exit_code = 128 - code if code < 0 else code  # a signal shows as 128 + signal number
        pod.terminated_reason = (
            "Completed" if code == 0 else ("OOMKilled" if pod.kill_reason == "OOMKilled" else "Error")
        )
        pod.phase = "Succeeded" if code == 0 else "Failed"
        if pod.kill_reason == "DeadlineExceeded":
            job.finished = ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
        elif code == 0:
            job.finished = ("Complete", "CompletionsReached", "Reached expected number of succeeded pods")
        else:
            job.finished = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")

    def _stop(self, pod: Pod, reason: str, sig: int = signal.SIGTERM) -> None:
        pod.kill_reason = pod.kill_reason or reason
        process = pod.process
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, sig)
        if sig != signal.SIGKILL:  # the kubelet's grace period, then SIGKILL
            try:
                process.wait(KILL_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def _environment(self, container: dict, volumes: list[dict], pod: Pod):
        folder = self.root / pod.name
        mounts: dict[str, str] = {}
        by_name = {v["name"]: v for v in volumes}
        for mount in container.get("volumeMounts", []):
            volume = by_name[mount["name"]]
            if "persistentVolumeClaim" in volume:
                host = self.claims[volume["persistentVolumeClaim"]["claimName"]]
            else:
                host = str(folder / mount["name"])
                Path(host).mkdir(parents=True, exist_ok=True)
                for key, text in self.config_maps.get(volume.get("configMap", {}).get("name"), {}).items():
                    (Path(host) / key).write_text(text, encoding="utf-8")
            mounts[mount["mountPath"]] = host

        def rewrite(value: str) -> str:
            for path, host in sorted(mounts.items(), key=lambda m: -len(m[0])):  # innermost first
                if value == path or value.startswith(path + "/"):
                    return host + value[len(path) :]
            return value

        home = folder / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
        for source in container.get("envFrom", []):
            ref = source.get("secretRef") or source.get("configMapRef") or {}
            store = self.secrets if "secretRef" in source else self.config_maps
            if ref.get("name") not in store and not ref.get("optional"):
                raise MissingSecret(
                    f'{"secret" if "secretRef" in source else "configmap"} "{ref.get("name")}" not found'
                )
            env.update(store.get(ref.get("name"), {}))
        for item in container.get("env", []):
            if "valueFrom" in item:
                ref = item["valueFrom"].get("secretKeyRef")
                value = self.secrets.get(ref["name"], {}).get(ref["key"]) if ref else None
                if value is None:
                    if ref and ref.get("optional"):
                        continue
                    raise MissingSecret(f'secret "{ref and ref["name"]}" not found or has no key')
                env[item["name"]] = value
            else:
                env[item["name"]] = rewrite(item.get("value", ""))
        return env, rewrite
