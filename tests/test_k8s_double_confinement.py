"""The double's node confines containers as a real node does for what a sandbox inside needs: the
runtime's default seccomp and AppArmor profiles refuse user namespaces and mounts, the shipped
Localhost profiles (deploy/k8s/node-setup) allow them, a profile missing on the node keeps the
container from being created. Real bubblewrap runs inside the double's pods to tell."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import kubernetes
import pytest
from k8s_double import NODE_SETUP, running_double
from k8s_double.confinement import SANDBOX_CALLS, seccomp_refusals
from test_k8s_double import job as job_body

SHIPPED = json.loads((NODE_SETUP / "worker-sandbox.json").read_text())
SHIPPED_SECCOMP = {"type": "Localhost", "localhostProfile": "leviathan/worker-sandbox.json"}
SHIPPED_APPARMOR = {"type": "Localhost", "localhostProfile": "leviathan-worker-sandbox"}
# What the sandbox does, reduced: every namespace, a fresh root, an empty /proc.
BWRAP = ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev", "--tmpfs", "/proc", "--", "true"]
# The runtime default's rules for the sandbox's calls (containerd/CRI-O/moby), for a profile-level check.
RUNTIME_DEFAULT_RULES = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {
            "names": ["clone", "mount", "sethostname", "umount2", "unshare"],
            "action": "SCMP_ACT_ALLOW",
            "includes": {"caps": ["CAP_SYS_ADMIN"]},
        },
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}],
            "excludes": {"caps": ["CAP_SYS_ADMIN"]},
        },
    ],
}


def test_the_shipped_profile_allows_the_sandbox_and_the_runtime_default_does_not() -> None:
    assert seccomp_refusals(SHIPPED) == []
    assert seccomp_refusals(RUNTIME_DEFAULT_RULES) == list(SANDBOX_CALLS)
    without_unshare = copy.deepcopy(SHIPPED)
    for rule in without_unshare["syscalls"]:
        rule["names"] = [n for n in rule["names"] if n != "unshare"]
    assert seccomp_refusals(without_unshare) == ["unshare"]


def test_the_shipped_profile_adds_nothing_beyond_the_sandbox_calls() -> None:
    """Least privilege: what the runtime default keeps for CAP_SYS_ADMIN (and other capabilities)
    and the sandbox does not need stays refused."""
    allowed = {n for rule in SHIPPED["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for n in rule["names"]}
    never = {
        "bpf", "setns", "keyctl", "add_key", "request_key", "perf_event_open", "init_module",
        "finit_module", "delete_module", "kexec_load", "open_by_handle_at", "chroot", "reboot",
        "swapon", "acct", "clock_settime", "settimeofday", "fsopen", "fsmount", "move_mount",
        "open_tree", "mount_setattr", "userfaultfd", "umount", "setdomainname", "quotactl",
    }  # fmt: skip
    assert not allowed & never
    assert SHIPPED["defaultAction"] == "SCMP_ACT_ERRNO"
    (clone3,) = [r for r in SHIPPED["syscalls"] if "clone3" in r["names"]]
    assert (clone3["action"], clone3["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)  # glibc falls back to clone


def run_bwrap_job(tmp_path: Path, name: str, security: dict, *, pod_security=None, **cluster):
    with running_double(tmp_path, visible=(), **cluster) as (double, kubeconfig):
        client = kubernetes.config.new_client_from_config(str(kubeconfig))
        container = {"command": BWRAP, "securityContext": security}
        body = job_body(name, "", container=container, pod={"securityContext": pod_security or {}})
        kubernetes.client.BatchV1Api(client).create_namespaced_job("leviathan", body)
        key = ("leviathan", name)

        def settled() -> bool:
            job = double.cluster.jobs.get(key)
            return job is not None and (
                job.finished is not None
                or bool(job.pod and job.pod.waiting and "Create" in job.pod.waiting[0])
            )

        double.cluster.wait_until(settled, 30)
        job = double.cluster.jobs[key]
        log = job.pod.log_path.read_text() if job.pod.log_path else ""
        client.close()
        return job, log


def test_runtime_default_seccomp_refuses_the_sandbox_inside_a_pod(tmp_path: Path) -> None:
    job, log = run_bwrap_job(
        tmp_path, "rd", {"seccompProfile": {"type": "RuntimeDefault"}, "appArmorProfile": SHIPPED_APPARMOR}
    )
    assert job.finished[0] == "Failed"
    assert "Creating new namespace failed" in log
    assert job.pod.confinement_refusal.startswith("seccomp RuntimeDefault refuses")


def test_an_unset_profile_is_the_kubelets_seccomp_default(tmp_path: Path) -> None:
    job, log = run_bwrap_job(tmp_path, "unset", {"appArmorProfile": SHIPPED_APPARMOR})
    assert job.finished[0] == "Failed" and "Creating new namespace failed" in log


def test_runtime_default_apparmor_refuses_the_sandbox_inside_a_pod(tmp_path: Path) -> None:
    job, log = run_bwrap_job(tmp_path, "aa", {"seccompProfile": SHIPPED_SECCOMP})
    assert job.finished[0] == "Failed"
    assert job.pod.confinement_refusal == "AppArmor RuntimeDefault denies mount"


def test_the_shipped_profiles_let_the_sandbox_start_and_override_the_pods(tmp_path: Path) -> None:
    job, log = run_bwrap_job(
        tmp_path,
        "shipped",
        {"seccompProfile": SHIPPED_SECCOMP, "appArmorProfile": SHIPPED_APPARMOR},
        pod_security={"seccompProfile": {"type": "RuntimeDefault"}},
    )
    assert job.finished[0] == "Complete", log
    assert job.pod.confinement_refusal is None


def test_a_node_without_apparmor_needs_only_the_seccomp_profile(tmp_path: Path) -> None:
    job, log = run_bwrap_job(tmp_path, "noaa", {"seccompProfile": SHIPPED_SECCOMP}, apparmor=False)
    assert job.finished[0] == "Complete", log


def test_a_seccomp_profile_missing_on_the_node_keeps_the_container_from_being_created(tmp_path: Path) -> None:
    job, _log = run_bwrap_job(
        tmp_path,
        "missing",
        {"seccompProfile": SHIPPED_SECCOMP, "appArmorProfile": SHIPPED_APPARMOR},
        seccomp_profiles={},
    )
    assert job.finished is None
    assert job.pod.waiting[0] == "CreateContainerError"
    assert "failed to create containerd container: cannot load seccomp profile" in job.pod.waiting[1]


@pytest.mark.parametrize(
    ("cluster", "message"),
    [
        (
            {"apparmor_profiles": ()},
            'Cannot enforce AppArmor: profile "leviathan-worker-sandbox" is not loaded',
        ),
        ({"apparmor": False}, "Cannot enforce AppArmor: AppArmor is not enabled on the host"),
    ],
)
def test_an_apparmor_profile_the_node_cannot_enforce_fails_the_pod_at_admission(
    tmp_path: Path, cluster, message
) -> None:
    job, log = run_bwrap_job(
        tmp_path,
        "rejected",
        {"seccompProfile": SHIPPED_SECCOMP, "appArmorProfile": SHIPPED_APPARMOR},
        **cluster,
    )
    assert job.finished[0] == "Failed" and log == ""
    assert job.pod.rejected == ("AppArmor", message)
