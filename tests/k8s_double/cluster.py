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
import secrets
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from k8s_double.confinement import loaded_apparmor_profiles
from k8s_double.kubelet import Image
from k8s_double.node import Node
from k8s_double.pods import Job, Pod, now

DEFAULT_GRACE_SECONDS = 30


class Cluster:
    """State of the fake cluster.

    ``images``: image name -> Image (anything else is not found); ``private_registries``: registry host
    -> "user:password" a pull must present; ``claims``: PVC name -> host folder; ``visible``: host
    folders every pod may read (a test's local git remotes); ``schedule``: Deployments whose pods
    run (others stay Pending, unschedulable) — None runs all. The node (confinement.py):
    ``seccomp_profiles``: path below the kubelet's seccomp root -> file installed there;
    ``seccomp_default``: the kubelet's seccompDefault (unset profiles are RuntimeDefault);
    ``apparmor``: the node has AppArmor; ``apparmor_profiles``: profile files loaded on it.
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
        seccomp_profiles=None,
        seccomp_default=True,
        apparmor=True,
        apparmor_profiles=(),
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
        self.seccomp_root = self.root / "node" / "var" / "lib" / "kubelet" / "seccomp"
        self.seccomp_root.mkdir(parents=True)
        for relative, source in (seccomp_profiles or {}).items():
            self.install_seccomp_profile(relative, Path(source).read_bytes())
        self.seccomp_default = seccomp_default
        self.apparmor = apparmor
        self.apparmor_profiles = loaded_apparmor_profiles(apparmor_profiles)
        self.created_bodies: list[dict[str, Any]] = []
        self.orphans: list[Pod] = []  # pods of Jobs deleted without propagation: still running
        self.api_port = 0
        self.ca_path: Path | None = None
        self._closed = threading.Event()
        self.node = Node(self)
        for namespace in namespaces:
            self.put(
                "Namespace", "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
            )
            self.put("ServiceAccount", namespace, _service_account("default", namespace))
        threading.Thread(target=self._controllers, daemon=True).start()

    def install_seccomp_profile(self, relative: str, content: bytes) -> Path:
        """What the operator's node setup does: a file below the kubelet's seccomp root."""
        path = self.seccomp_root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

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
        threading.Thread(target=self.node.run_pod, args=(pod, False), daemon=True).start()

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
        threading.Thread(
            target=self.node.stop, args=(pod, "deleted", signal.SIGTERM, grace), daemon=True
        ).start()

    # -- fault injection for tests --------------------------------------------------------------------
    def kill_pod(self, job_name: str, reason: str = "OOMKilled", namespace: str = "leviathan") -> None:
        """The node kills the container (OOM, eviction): SIGKILL, exit 137."""
        with self.lock:
            job = self.jobs[(namespace, job_name)]
        job.pod.kill_reason = reason
        self.node.stop(job.pod, reason, sig=signal.SIGKILL)

    def wait_until(self, predicate, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise TimeoutError("condition not reached in the Kubernetes double")
            time.sleep(0.05)

    def close(self) -> None:
        self._closed.set()
        for pod in self.all_pods() + [p for j in list(self.jobs.values()) for p in j.pods]:
            self.node.stop(pod, "shutdown", sig=signal.SIGKILL)

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

    # -- the Job controller ---------------------------------------------------------------------------
    def job_pod_ended(self, pod: Pod) -> None:
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
        threading.Thread(target=self.node.run_pod, args=(pod, True), daemon=True).start()


def _service_account(name: str, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
