"""The cluster behind the Kubernetes API double: an object store, the Job, Deployment and TTL
controllers, ServiceAccount admission and a kubelet whose containers run under bubblewrap.

Controllers behave as in Kubernetes 1.31+: a Job's pod is created only if its ServiceAccount exists;
a Job that succeeds gets ``SuccessCriteriaMet`` then ``Complete``; one that fails (``backoffLimit``
spent) or passes ``activeDeadlineSeconds`` gets ``FailureTarget`` at once, its running pods are
deleted (SIGTERM, then SIGKILL after ``terminationGracePeriodSeconds``), and ``Failed`` only once
they have terminated; ``ttlSecondsAfterFinished`` deletes a finished Job and its pods. Deleting a
Job without ``propagationPolicy`` orphans its pods (batch/v1's default), as dagster-k8s expects.
A Deployment runs one pod (every pod shares the host's network, so replicas would share ports),
restarted with back-off when its container exits. Pod phases, container states and messages are
the kubelet's.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from k8s_double import kubelet
from k8s_double.kubelet import ContainerConfigError, Image, ImagePullError, MountError
from k8s_double.sandbox import bwrap_argv

DEFAULT_GRACE_SECONDS = 30
RETRY_SECONDS = 0.3  # how often the kubelet retries a config error or an image pull (real: ~10 s)
CRASH_BACKOFF_SECONDS = (1, 2, 4, 8)  # real: 10 s doubling to 5 min; shortened, same shape


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Pod:
    body: dict[str, Any]
    owner: str  # the Job's or Deployment's name
    phase: str = "Pending"
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    exit_code: int | None = None
    terminated_reason: str | None = None
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    started: str | None = None
    kill_reason: str | None = None
    restart_count: int = 0
    deleted: bool = False  # gone from the API (the object may still be terminating)
    stopped: threading.Event = field(default_factory=threading.Event)
    restarts: bool = False  # a Deployment's pod (restartPolicy Always): restarted when it exits
    unschedulable: str | None = None  # the scheduler's message while no node takes it

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.body["metadata"]["namespace"]

    @property
    def labels(self) -> dict[str, str]:
        return self.body["metadata"].get("labels", {})

    @property
    def container(self) -> str:
        return self.body["spec"]["containers"][0]["name"]

    def to_api(self) -> dict[str, Any]:
        container = self.body["spec"]["containers"][0]
        if self.exit_code is not None and self.waiting is None:
            state = {
                "terminated": {
                    "exitCode": self.exit_code,
                    "reason": self.terminated_reason,
                    "startedAt": self.started,
                    "finishedAt": now(),
                }
            }
        elif self.waiting is not None:
            state = {
                "waiting": {
                    "reason": self.waiting[0],
                    **({"message": self.waiting[1]} if self.waiting[1] else {}),
                }
            }
        else:
            state = {"running": {"startedAt": self.started}}
        running = self.phase == "Running" and self.waiting is None
        scheduled = {
            "type": "PodScheduled",
            "status": "True",
            "lastTransitionTime": self.body["metadata"]["creationTimestamp"],
        }
        if self.unschedulable:
            scheduled.update(status="False", reason="Unschedulable", message=self.unschedulable)
            return {**self.body, "status": {"phase": "Pending", "conditions": [scheduled]}}
        status: dict[str, Any] = {
            "phase": self.phase,
            "conditions": [
                scheduled,
                {"type": "Ready", "status": "True" if running else "False", "lastTransitionTime": now()},
            ],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "" if self.started is None else f"{container['image']}@sha256:{'0' * 64}",
                    "ready": running,
                    "restartCount": self.restart_count,
                    "started": running,
                    "state": state,
                }
            ],
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
        }
        if self.started:
            status["startTime"] = self.started
        return {**self.body, "status": status}


@dataclass
class Job:
    body: dict[str, Any]
    pod: Pod | None = None
    pods: list[Pod] = field(default_factory=list)
    start_monotonic: float = field(default_factory=time.monotonic)
    failure_target: tuple[str, str] | None = None  # (reason, message) once the Job is failing
    finished: tuple[str, str, str] | None = None  # (type, reason, message)
    finished_monotonic: float | None = None
    failures: int = 0
    event: str | None = None  # why no pod could be created

    def to_api(self) -> dict[str, Any]:
        status: dict[str, Any] = {"startTime": self.body["metadata"]["creationTimestamp"]}
        active = [p for p in self.pods if not p.deleted and p.exit_code is None]
        status["active"] = len(active) or None
        status["ready"] = sum(1 for p in active if p.phase == "Running" and p.waiting is None)
        status["terminating"] = sum(1 for p in self.pods if p.deleted and not p.stopped.is_set()) or None
        status["failed"] = self.failures or None
        status["uncountedTerminatedPods"] = {}
        conditions = []
        if self.failure_target:
            reason, message = self.failure_target
            conditions.append(_condition("FailureTarget", reason, message))
        if self.finished:
            kind, reason, message = self.finished
            if kind == "Complete":
                conditions.append(_condition("SuccessCriteriaMet", reason, message))
                status["succeeded"] = 1
                status["completionTime"] = now()
            conditions.append(_condition(kind, reason, message))
        if conditions:
            status["conditions"] = conditions
        return {**self.body, "status": {k: v for k, v in status.items() if v is not None}}


def _condition(kind: str, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now(),
        "lastTransitionTime": now(),
    }


class Cluster:
    """State of the fake cluster.

    ``images``: image name -> Image (anything else is not found); ``private_registries``: registry host
    -> "user:password" a pull must present; ``claims``: PVC name -> host folder; ``visible``: host
    folders every pod may read (a test's local git remotes); ``schedule``: Deployments whose pods
    run (others stay Pending, unschedulable) — None runs all.
    """

    def __init__(
        self,
        *,
        namespaces=("default", "leviathan"),
        images=None,
        private_registries=None,
        claims=None,
        visible=(),
        schedule=None,
    ):
        self.images: dict[str, Image] = dict(images or {})
        self.private_registries = dict(private_registries or {})
        self.claims: dict[str, str] = dict(claims or {})
        self.visible = tuple(Path(p) for p in visible)
        self.schedule = None if schedule is None else set(schedule)
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kind, namespace, name) -> body
        self.jobs: dict[tuple[str, str], Job] = {}
        self.deployment_pods: dict[tuple[str, str], Pod] = {}
        self.tokens: dict[str, tuple[str, str]] = {}  # bearer token -> (namespace, service account)
        self.lock = threading.RLock()
        self.root = Path(tempfile.mkdtemp(prefix="k8s-double-"))
        self.created_bodies: list[dict[str, Any]] = []
        self.orphans: list[Pod] = []  # pods of Jobs deleted without propagation: still running
        self.api_port = 0
        self.ca_path: Path | None = None
        self._closed = threading.Event()
        for namespace in namespaces:
            self.put(
                "Namespace", "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
            )
            self.put("ServiceAccount", namespace, _service_account("default", namespace))
        threading.Thread(target=self._controllers, daemon=True).start()

    # -- the object store -----------------------------------------------------------------------------
    def put(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        if namespace:
            meta["namespace"] = namespace
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        meta.setdefault("resourceVersion", "1")
        if kind == "Secret":  # the API server folds stringData into data
            data = body.setdefault("data", {})
            for key, value in (body.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(value.encode()).decode()
            body.setdefault("type", "Opaque")
        with self.lock:
            self.objects[(kind, namespace, meta["name"])] = body
        if kind == "Namespace" and self.get("ServiceAccount", meta["name"], "default") is None:
            # The ServiceAccount controller gives every namespace its "default" account.
            self.put("ServiceAccount", meta["name"], _service_account("default", meta["name"]))
        if kind == "Deployment":
            self._start_deployment(namespace, body)
        return body

    def get(self, kind: str, namespace: str, name: str | None) -> dict[str, Any] | None:
        with self.lock:
            return self.objects.get((kind, namespace, name or ""))

    def list(self, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                o
                for (k, ns, _), o in self.objects.items()
                if k == kind and (namespace is None or ns == namespace)
            ]

    def delete(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            body = self.objects.pop((kind, namespace, name), None)
            pod = self.deployment_pods.pop((namespace, name), None) if kind == "Deployment" else None
        if pod is not None:
            self.delete_pod(pod)
        return body

    def create_secret(self, name: str, data: dict[str, str], namespace: str = "leviathan", **extra) -> None:
        self.put(
            "Secret",
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name},
                "stringData": dict(data),
                **extra,
            },
        )

    def create_config_map(self, name: str, data: dict[str, str], namespace: str = "leviathan") -> None:
        self.put(
            "ConfigMap",
            namespace,
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": dict(data)},
        )

    def create_service_account(self, name: str, namespace: str = "leviathan") -> None:
        self.put("ServiceAccount", namespace, _service_account(name, namespace))

    # -- Jobs -----------------------------------------------------------------------------------------
    def create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.put("Job", namespace, body)
        job = Job(body)
        with self.lock:
            del self.objects[("Job", namespace, body["metadata"]["name"])]  # Jobs live in self.jobs
            self.jobs[(namespace, body["metadata"]["name"])] = job
            self.created_bodies.append(body)
        self._new_job_pod(job)
        return job.to_api()

    def _new_job_pod(self, job: Job) -> None:
        meta = job.body["metadata"]
        template = job.body["spec"]["template"]
        labels = {
            **template.get("metadata", {}).get("labels", {}),
            "job-name": meta["name"],
            "batch.kubernetes.io/job-name": meta["name"],
            "controller-uid": meta["uid"],
            "batch.kubernetes.io/controller-uid": meta["uid"],
        }
        name = f"{meta['name']}-{secrets.token_hex(3)[:5]}"
        pod = self._admit(meta["namespace"], name, labels, template, meta["name"], "Job")
        if isinstance(pod, str):
            job.event = pod
            return
        job.pod = pod
        job.pods.append(pod)
        threading.Thread(target=self._run_pod, args=(pod, False), daemon=True).start()

    def delete_job(self, namespace: str, name: str, propagation: str | None = None) -> Job | None:
        with self.lock:
            job = self.jobs.pop((namespace, name), None)
        if job is not None and propagation in ("Background", "Foreground"):
            for pod in job.pods:
                self.delete_pod(pod)
        elif job is not None:  # batch/v1's default for Jobs: orphanDependents
            with self.lock:
                self.orphans.extend(p for p in job.pods if not p.deleted)
        return job

    # -- Pods -----------------------------------------------------------------------------------------
    def all_pods(self) -> list[Pod]:
        with self.lock:
            pods = [p for j in self.jobs.values() for p in j.pods] + list(self.deployment_pods.values())
            pods += self.orphans
        return [p for p in pods if not p.deleted]

    def pods(self, namespace: str, selector: dict[str, str]) -> list[Pod]:
        return [
            p
            for p in self.all_pods()
            if p.namespace == namespace and all(p.labels.get(k) == v for k, v in selector.items())
        ]

    def pod(self, namespace: str, name: str) -> Pod | None:
        return next((p for p in self.pods(namespace, {}) if p.name == name), None)

    def delete_pod(self, pod: Pod, grace: float | None = None) -> None:
        """Graceful deletion: gone from the API at once, SIGTERM, SIGKILL after the grace period."""
        pod.deleted = True
        if grace is None:
            grace = pod.body["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        threading.Thread(target=self._stop, args=(pod, "deleted", signal.SIGTERM, grace), daemon=True).start()

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
        self._closed.set()
        for pod in self.all_pods() + [p for j in list(self.jobs.values()) for p in j.pods]:
            self._stop(pod, "shutdown", sig=signal.SIGKILL)

    # -- admission: ServiceAccount, image pull secrets, token ----------------------------------------
    def _admit(self, namespace, name, labels, template, owner, owner_kind) -> Pod | str:
        spec = {**template["spec"]}
        account_name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        account = self.get("ServiceAccount", namespace, account_name)
        if account is None:
            return (
                f'Error creating: pods "{name}" is forbidden: error looking up service account '
                f'{namespace}/{account_name}: serviceaccount "{account_name}" not found'
            )
        spec["serviceAccountName"] = account_name
        if not spec.get("imagePullSecrets") and account.get("imagePullSecrets"):
            spec["imagePullSecrets"] = list(account["imagePullSecrets"])
        spec.setdefault("restartPolicy", "Always")
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": now(),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1" if owner_kind == "Job" else "apps/v1",
                        "kind": owner_kind,
                        "name": owner,
                        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, owner)),
                        "controller": True,
                    }
                ],
                **(
                    {"annotations": template["metadata"]["annotations"]}
                    if template.get("metadata", {}).get("annotations")
                    else {}
                ),
            },
            "spec": spec,
        }
        return Pod(body, owner)

    def _token_dir(self, pod: Pod, folder: Path) -> Path | None:
        spec = pod.body["spec"]
        account = self.get("ServiceAccount", pod.namespace, spec["serviceAccountName"]) or {}
        automount = spec.get(
            "automountServiceAccountToken", account.get("automountServiceAccountToken", True)
        )
        if not automount:
            return None
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = (pod.namespace, spec["serviceAccountName"])
        folder = folder / "serviceaccount"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "token").write_text(token)
        (folder / "namespace").write_text(pod.namespace)
        (folder / "ca.crt").write_bytes(self.ca_path.read_bytes() if self.ca_path else b"")
        return folder

    # -- the kubelet ----------------------------------------------------------------------------------
    def _lookup(self, namespace: str):
        return lambda kind, name: self.get(kind, namespace, name)

    def _service_env_and_hosts(self, namespace: str) -> tuple[dict[str, str], list[str]]:
        env = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.api_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.api_port),
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{self.api_port}",
        }
        hosts = ["127.0.0.1 localhost", "127.0.0.1 kubernetes kubernetes.default kubernetes.default.svc"]
        for service in self.list("Service", None):
            meta, spec = service["metadata"], service.get("spec", {})
            name, ns = meta["name"], meta["namespace"]
            hosts.append(
                f"127.0.0.1 {name}.{ns} {name}.{ns}.svc {name}.{ns}.svc.cluster.local"
                + (f" {name}" if ns == namespace else "")
            )
            if ns != namespace or not spec.get("ports"):
                continue
            prefix = name.upper().replace("-", "_")
            first = spec["ports"][0]["port"]
            env[f"{prefix}_SERVICE_HOST"] = "127.0.0.1"
            env[f"{prefix}_SERVICE_PORT"] = str(first)
            env[f"{prefix}_PORT"] = f"tcp://127.0.0.1:{first}"
            for port in spec["ports"]:
                if port.get("name"):
                    env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
        return env, hosts

    def _etc_files(self, folder: Path, hosts: list[str], uid: int | None) -> dict[str, Path]:
        (folder / "hosts").write_text("\n".join(hosts) + "\n")
        passwd = Path("/etc/passwd").read_text()
        group = Path("/etc/group").read_text()
        if uid not in (None, 0):
            passwd += f"leviathan:x:{uid}:{uid}::/home/leviathan:/bin/sh\n"
            group += f"leviathan:x:{uid}:\n"
        (folder / "passwd").write_text(passwd)
        (folder / "group").write_text(group)
        return {
            "/etc/hosts": folder / "hosts",
            "/etc/passwd": folder / "passwd",
            "/etc/group": folder / "group",
        }

    def _prepare(self, pod: Pod):
        """Everything the container needs, or raise what keeps it waiting."""
        spec, container = pod.body["spec"], pod.body["spec"]["containers"][0]
        if pod.restarts and self.schedule is not None and pod.owner not in self.schedule:
            raise _Unschedulable(
                "0/1 nodes are available: this double runs only the Deployments its test starts"
            )
        pull_secrets = [
            s
            for ref in spec.get("imagePullSecrets", [])
            if (s := self.get("Secret", pod.namespace, ref.get("name")))
        ]
        image = kubelet.check_pull(container["image"], self.images, self.private_registries, pull_secrets)
        folder = self.root / pod.name
        folder.mkdir(parents=True, exist_ok=True)
        lookup = self._lookup(pod.namespace)
        service_env, hosts = self._service_env_and_hosts(pod.namespace)
        if spec.get("enableServiceLinks") is False:
            service_env = {k: v for k, v in service_env.items() if k.startswith("KUBERNETES_")}
        env = kubelet.resolve_env(pod.body, container, lookup, service_env)
        token = self._token_dir(pod, folder)
        mounts = kubelet.materialize_volumes(pod.body, container, folder, lookup, self.claims, token)
        uid = (container.get("securityContext") or {}).get(
            "runAsUser", (spec.get("securityContext") or {}).get("runAsUser", 10001)
        )
        files = self._etc_files(folder, hosts, uid)
        return kubelet.sandbox_for(pod.body, container, image, env, mounts, files, self.visible)

    def _run_pod(self, pod: Pod, restart: bool) -> None:
        pod.restarts = restart
        image_failures = 0
        while not (pod.deleted or self._closed.is_set()):
            try:
                sandbox = self._prepare(pod)
                break
            except ImagePullError as exc:
                image_failures += 1
                ref = pod.body["spec"]["containers"][0]["image"]
                pod.waiting = (
                    ("ErrImagePull", str(exc))
                    if image_failures % 2
                    else ("ImagePullBackOff", f'Back-off pulling image "{ref}"')
                )
            except ContainerConfigError as exc:
                pod.waiting = ("CreateContainerConfigError", str(exc))
            except MountError:
                pod.waiting = ("ContainerCreating", "")
            except _Unschedulable as exc:
                pod.unschedulable = str(exc)
            time.sleep(RETRY_SECONDS)
        else:
            pod.stopped.set()
            return
        pod.log_path = self.root / f"{pod.name}.log"
        while True:
            code = self._run_container(pod, sandbox)
            if code is None or not restart or pod.deleted or self._closed.is_set():
                break
            delay = CRASH_BACKOFF_SECONDS[min(pod.restart_count, len(CRASH_BACKOFF_SECONDS) - 1)]
            pod.waiting = (
                "CrashLoopBackOff",
                f"back-off {delay}s restarting failed container={pod.container} pod={pod.name}",
            )
            time.sleep(delay)
            pod.restart_count += 1
            pod.exit_code = None
        pod.stopped.set()
        if not restart:
            self._job_pod_ended(pod)

    def _run_container(self, pod: Pod, sandbox) -> int | None:
        with self.lock:
            if pod.deleted:
                return None
            log = open(pod.log_path, "ab")  # noqa: SIM115 - closed when the process ends
            pod.process = subprocess.Popen(
                bwrap_argv(sandbox),
                env={},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            pod.phase, pod.waiting, pod.started = "Running", None, now()
        code = pod.process.wait()
        log.close()
        pod.exit_code = 128 - code if code < 0 else code  # a signal shows as 128 + signal number
        pod.terminated_reason = (
            "Completed" if code == 0 else ("OOMKilled" if pod.kill_reason == "OOMKilled" else "Error")
        )
        if pod.body["spec"].get("restartPolicy") != "Always" or pod.deleted:
            pod.phase = "Succeeded" if code == 0 else "Failed"
        return pod.exit_code

    def _stop(self, pod: Pod, reason: str, sig: int = signal.SIGTERM, grace: float = 2.0) -> None:
        pod.kill_reason = pod.kill_reason or reason
        process = pod.process
        if process is None or process.poll() is not None:
            pod.stopped.set()
            return
        try:
            os.killpg(process.pid, sig)
            if sig != signal.SIGKILL:  # the kubelet's grace period, then SIGKILL
                try:
                    process.wait(grace)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # -- the Job controller ---------------------------------------------------------------------------
    def _job_pod_ended(self, pod: Pod) -> None:
        with self.lock:
            job = next((j for j in self.jobs.values() if pod in j.pods), None)
        if job is None or job.finished:
            return
        if job.failure_target:  # deadline: the pods were deleted; Failed once they have terminated
            job.finished = ("Failed", *job.failure_target)
        elif pod.exit_code == 0:
            job.finished = ("Complete", "CompletionsReached", "Reached expected number of succeeded pods")
        else:
            job.failures += 1
            if job.failures > job.body["spec"].get("backoffLimit", 6):
                job.failure_target = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
                job.finished = ("Failed", *job.failure_target)
            else:
                self._new_job_pod(job)
        if job.finished:
            job.finished_monotonic = time.monotonic()

    def _controllers(self) -> None:
        while not self._closed.wait(0.05):
            with self.lock:
                jobs = list(self.jobs.items())
            for key, job in jobs:
                spec = job.body["spec"]
                deadline = spec.get("activeDeadlineSeconds")
                if (
                    job.finished is None
                    and job.failure_target is None
                    and deadline is not None
                    and time.monotonic() - job.start_monotonic > deadline
                ):
                    job.failure_target = ("DeadlineExceeded", "Job was active longer than specified deadline")
                    live = [p for p in job.pods if not p.stopped.is_set()]
                    for pod in live:
                        pod.kill_reason = "DeadlineExceeded"
                        self.delete_pod(pod)
                    if not live:
                        job.finished, job.finished_monotonic = (
                            ("Failed", *job.failure_target),
                            time.monotonic(),
                        )
                ttl = spec.get("ttlSecondsAfterFinished")
                if (
                    job.finished_monotonic is not None
                    and ttl is not None
                    and time.monotonic() - job.finished_monotonic >= ttl
                ):
                    self.delete_job(*key, propagation="Background")

    # -- the Deployment controller --------------------------------------------------------------------
    def _start_deployment(self, namespace: str, body: dict[str, Any]) -> None:
        template = body["spec"]["template"]
        digest = secrets.token_hex(5)[:10]
        labels = {**template.get("metadata", {}).get("labels", {}), "pod-template-hash": digest}
        name = f"{body['metadata']['name']}-{digest}-{secrets.token_hex(3)[:5]}"
        pod = self._admit(namespace, name, labels, template, body["metadata"]["name"], "ReplicaSet")
        if isinstance(pod, str):
            body["event"] = pod
            return
        with self.lock:
            self.deployment_pods[(namespace, body["metadata"]["name"])] = pod
        threading.Thread(target=self._run_pod, args=(pod, True), daemon=True).start()


class _Unschedulable(Exception):
    pass


def _service_account(name: str, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
