"""The worker container's confinement on a node: seccomp, AppArmor and the pod's user namespace.

The worker runs the target's tests and the agent's shell in a bubblewrap sandbox, which creates user,
mount, PID and network namespaces. The runtimes' default seccomp profile (containerd's and CRI-O's,
derived from Docker's) allows ``unshare``, ``mount``, ``umount2``, ``sethostname`` and ``clone`` with
namespace flags only to a process holding CAP_SYS_ADMIN, and ``pivot_root`` to nobody; their default
AppArmor profile denies ``mount``. With every capability dropped, the sandbox cannot start under
either. The defaults here are therefore the two profiles shipped in ``deploy/k8s/node-setup/``: the
runtime's default plus exactly those calls, installed on every node by the operator. Both are
``Localhost`` profiles, which the namespace's Pod Security level (baseline, restricted warned) admits;
``Unconfined`` AppArmor would be refused by baseline. Capabilities stay dropped, the root filesystem
read-only.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leviathan_dagster.core.config.kubernetes import KubernetesSettings

LOCALHOST = "localhost/"
SECCOMP_TYPES = ("RuntimeDefault", "Unconfined")
APPARMOR_NONE = "none"  # the field omitted: a node without AppArmor (SELinux nodes)
# Where the kubelet looks for a Localhost seccomp profile (its --seccomp-profile-root, the default).
KUBELET_SECCOMP_ROOT = "/var/lib/kubelet/seccomp"
# The worker reads this to say, when its sandbox probe fails, which profiles its pod asked for.
CONFINEMENT_ENV = "LEVIATHAN_WORKER_CONFINEMENT"
_PATH_PART = re.compile(r"^[A-Za-z0-9._-]+$")
_APPARMOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,252}$")


def seccomp_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid kubernetes.worker_seccomp_profile, or None."""
    if not isinstance(value, str):
        return "must be a string"
    if value in SECCOMP_TYPES:
        return None
    if value.startswith(LOCALHOST):
        parts = value[len(LOCALHOST) :].split("/")
        if all(_PATH_PART.match(p) and p not in (".", "..") for p in parts):
            return None
        return (
            f"names a path that is not descending below the kubelet's seccomp root ({KUBELET_SECCOMP_ROOT})"
        )
    return "must be 'localhost/<path below the kubelet's seccomp root>', 'RuntimeDefault' or 'Unconfined'"


def apparmor_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid kubernetes.worker_apparmor_profile, or None."""
    if not isinstance(value, str):
        return "must be a string"
    if value in (*SECCOMP_TYPES, APPARMOR_NONE):
        return None
    if value.startswith(LOCALHOST) and _APPARMOR_NAME.match(value[len(LOCALHOST) :]):
        return None
    return (
        "must be 'localhost/<loaded profile name>', 'RuntimeDefault', 'Unconfined' or 'none' "
        "(a node without AppArmor)"
    )


def _profile(value: str) -> dict[str, str]:
    if value.startswith(LOCALHOST):
        return {"type": "Localhost", "localhostProfile": value[len(LOCALHOST) :]}
    return {"type": value}


def worker_container_confinement(settings: KubernetesSettings) -> dict[str, Any]:
    """The confinement part of the worker container's securityContext."""
    confinement: dict[str, Any] = {"seccompProfile": _profile(settings.worker_seccomp_profile)}
    if settings.worker_apparmor_profile != APPARMOR_NONE:
        confinement["appArmorProfile"] = _profile(settings.worker_apparmor_profile)
    return confinement


def confinement_summary(settings: KubernetesSettings) -> str:
    """One line for the worker's sandbox message: what its pod asked the node for."""
    return (
        f"seccomp {settings.worker_seccomp_profile}, AppArmor {settings.worker_apparmor_profile}, "
        f"hostUsers {str(settings.worker_host_users).lower()}"
    )
