"""The node of the double: how the kubelet sets up one pod's container and runs it under bubblewrap
(kubelet.py resolves what goes in; sandbox.py builds the bubblewrap command line)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from k8s_double import kubelet
from k8s_double.confinement import CreateContainerError, PodRejected, sandbox_refusal
from k8s_double.kubelet import ContainerConfigError, ImagePullError, MountError
from k8s_double.pods import Pod, now
from k8s_double.sandbox import bwrap_argv

if TYPE_CHECKING:
    from k8s_double.cluster import Cluster

RETRY_SECONDS = 0.3  # how often the kubelet retries a config error or an image pull (real: ~10 s)
CRASH_BACKOFF_SECONDS = (1, 2, 4, 8)  # real: 10 s doubling to 5 min; shortened, same shape


class Unschedulable(Exception):
    pass


class Node:
    """The one node: runs a pod (``run_pod``, in its own thread) and stops it (``stop``)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def _token_dir(self, pod: Pod, folder: Path) -> Path | None:
        spec = pod.body["spec"]
        account = self.cluster.get("ServiceAccount", pod.namespace, spec["serviceAccountName"]) or {}
        automount = spec.get(
            "automountServiceAccountToken", account.get("automountServiceAccountToken", True)
        )
        if not automount:
            return None
        token = secrets.token_urlsafe(24)
        with self.cluster.lock:
            self.cluster.tokens[token] = (pod.namespace, spec["serviceAccountName"])
        folder = folder / "serviceaccount"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "token").write_text(token)
        (folder / "namespace").write_text(pod.namespace)
        (folder / "ca.crt").write_bytes(self.cluster.ca_path.read_bytes() if self.cluster.ca_path else b"")
        return folder

    # -- the kubelet ----------------------------------------------------------------------------------
    def _lookup(self, namespace: str):
        return lambda kind, name: self.cluster.get(kind, namespace, name)

    def _service_env_and_hosts(self, namespace: str) -> tuple[dict[str, str], list[str]]:
        env = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.cluster.api_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.cluster.api_port),
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{self.cluster.api_port}",
        }
        hosts = ["127.0.0.1 localhost", "127.0.0.1 kubernetes kubernetes.default kubernetes.default.svc"]
        for service in self.cluster.list("Service", None):
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
        # The kubelet's admission (AppArmor) first, then what the runtime needs to create it (seccomp).
        pod.confinement_refusal = sandbox_refusal(pod.body, container, self.cluster)
        if pod.restarts and self.cluster.schedule is not None and pod.owner not in self.cluster.schedule:
            raise Unschedulable(
                "0/1 nodes are available: this double runs only the Deployments its test starts"
            )
        pull_secrets = [
            s
            for ref in spec.get("imagePullSecrets", [])
            if (s := self.cluster.get("Secret", pod.namespace, ref.get("name")))
        ]
        image = kubelet.check_pull(
            container["image"], self.cluster.images, self.cluster.private_registries, pull_secrets
        )
        folder = self.cluster.root / pod.name
        folder.mkdir(parents=True, exist_ok=True)
        lookup = self._lookup(pod.namespace)
        service_env, hosts = self._service_env_and_hosts(pod.namespace)
        if spec.get("enableServiceLinks") is False:
            service_env = {k: v for k, v in service_env.items() if k.startswith("KUBERNETES_")}
        env = kubelet.resolve_env(pod.body, container, lookup, service_env)
        token = self._token_dir(pod, folder)
        mounts = kubelet.materialize_volumes(pod.body, container, folder, lookup, self.cluster.claims, token)
        uid = (container.get("securityContext") or {}).get(
            "runAsUser", (spec.get("securityContext") or {}).get("runAsUser", 10001)
        )
        files = self._etc_files(folder, hosts, uid)
        sandbox = kubelet.sandbox_for(pod.body, container, image, env, mounts, files, self.cluster.visible)
        sandbox.nested_userns = pod.confinement_refusal is None
        return sandbox

    def run_pod(self, pod: Pod, restart: bool) -> None:
        try:
            self._run_pod_unguarded(pod, restart)
        except FileNotFoundError:
            if self.cluster._closed.is_set():
                return  # the cluster stopped (its folder removed) while this pod was restarting
            raise
        except Exception as exc:  # a bug of the double must show on the pod, not vanish with its thread
            pod.waiting = ("RunContainerError", f"k8s double: {type(exc).__name__}: {exc}")
            raise

    def _run_pod_unguarded(self, pod: Pod, restart: bool) -> None:
        pod.restarts = restart
        image_failures = 0
        while not (pod.deleted or self.cluster._closed.is_set()):
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
            except CreateContainerError as exc:
                pod.waiting = ("CreateContainerError", str(exc))
            except PodRejected as exc:  # admission: the pod fails for good, no container ever runs
                pod.rejected, pod.phase, pod.waiting = (exc.reason, str(exc)), "Failed", None
                pod.stopped.set()
                if not restart:
                    self.cluster.job_pod_ended(pod)
                return
            except MountError:
                pod.waiting = ("ContainerCreating", "")
            except Unschedulable as exc:
                pod.unschedulable = str(exc)
            time.sleep(RETRY_SECONDS)
        else:
            pod.stopped.set()
            return
        pod.log_path = self.cluster.root / f"{pod.name}.log"
        while True:
            code = self._run_container(pod, sandbox)
            if code is None or not restart or pod.deleted or self.cluster._closed.is_set():
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
            self.cluster.job_pod_ended(pod)

    def _run_container(self, pod: Pod, sandbox) -> int | None:
        with self.cluster.lock:
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
                preexec_fn=_clean_signals,
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

    def stop(self, pod: Pod, reason: str, sig: int = signal.SIGTERM, grace: float = 2.0) -> None:
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


def _clean_signals() -> None:
    """A container's process starts with every signal at its default and none blocked, as the runtime
    starts it, whatever this process inherited: a test runner started in the background runs with
    SIGTERM ignored (SIG_IGN survives exec), and a pod would then ignore the kubelet's SIGTERM until
    its grace period ran out."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_DFL)
