"""How the double's node confines a container, as far as a sandbox inside it is concerned: seccomp and
AppArmor decide whether the container may create user namespaces and mount (what bubblewrap does).

A real node applies the profiles with the kernel; this double decides from the pod spec and the
profiles installed on its node, exactly as a node would resolve them:

- seccomp: the container's ``seccompProfile``, else the pod's, else the kubelet's default —
  ``RuntimeDefault`` with ``seccompDefault`` (the kubelet option, on here as on hardened clusters),
  ``Unconfined`` without. ``RuntimeDefault`` is containerd's and CRI-O's default profile: ``unshare``,
  ``mount``, ``umount2``, ``sethostname`` and ``clone`` with namespace flags only with CAP_SYS_ADMIN,
  ``pivot_root`` never. ``Localhost`` reads the file below the node's seccomp root (missing or
  unreadable: ``CreateContainerError`` with containerd's message) and evaluates its rules for a
  process without capabilities.
- AppArmor (a node with AppArmor, as Ubuntu's and COS's): ``appArmorProfile`` of the container, else
  the pod's, else ``RuntimeDefault``, whose ``deny mount`` stops the sandbox. ``Localhost`` must name
  a profile loaded on the node (else the kubelet's admission refuses the pod: "Cannot enforce
  AppArmor") that allows ``mount`` and ``pivot_root``. On a node without AppArmor any profile but
  ``Unconfined`` is refused the same way.

A refusal is enforced by running the container with bubblewrap's ``--disable-userns``: a sandbox
inside it then fails to create its user namespace, as it would on a node.
"""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path
from typing import Any

# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET: what bubblewrap asks for.
CLONE_NAMESPACE_FLAGS = 0x7E020000
SANDBOX_CALLS = ("clone", "unshare", "mount", "umount2", "pivot_root", "sethostname")
_ALLOWING = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
_APPARMOR_RULE = re.compile(r"^\s*(mount|pivot_root)\b[^#\n]*,", re.MULTILINE)
_APPARMOR_NAME = re.compile(r"^\s*profile\s+(\S+)", re.MULTILINE)


class CreateContainerError(Exception):
    """The runtime cannot create the container (CreateContainerError): the message is the kubelet's."""


class PodRejected(Exception):
    """The kubelet's admission refuses the pod: it fails at once (phase Failed, this reason and
    message on the pod, no container status), as for an AppArmor profile it cannot enforce."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _effective(pod: dict, container: dict, key: str) -> dict[str, Any] | None:
    own = (container.get("securityContext") or {}).get(key)
    return own or (pod["spec"].get("securityContext") or {}).get(key)


def _arg_holds(condition: dict, value: int) -> bool:
    op, wanted = condition.get("op"), condition.get("value", 0)
    if op == "SCMP_CMP_MASKED_EQ":
        return value & wanted == condition.get("valueTwo", 0)
    if op == "SCMP_CMP_EQ":
        return value == wanted
    if op == "SCMP_CMP_NE":
        return value != wanted
    return False  # an operator the double does not evaluate never counts as allowing


def _applies(rule: dict) -> bool:
    includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
    if includes.get("caps"):
        return False  # only for a process holding those capabilities: the worker holds none
    if includes.get("arches") and _ARCH not in includes["arches"]:
        return False
    return _ARCH not in (excludes.get("arches") or [])


def seccomp_refusals(profile: dict[str, Any]) -> list[str]:
    """The sandbox's calls ``profile`` refuses a process without capabilities (clone and unshare
    with bubblewrap's namespace flags as their first argument)."""
    refused = []
    for call in SANDBOX_CALLS:
        verdicts = [
            rule.get("action") in _ALLOWING
            for rule in profile.get("syscalls") or []
            if call in (rule.get("names") or [rule.get("name")])
            and _applies(rule)
            and all(_arg_holds(arg, CLONE_NAMESPACE_FLAGS) for arg in rule.get("args") or [])
        ]
        allowed = all(verdicts) if verdicts else profile.get("defaultAction") in _ALLOWING
        if not allowed:
            refused.append(call)
    return refused


def _localhost_seccomp(root: Path, relative: str) -> dict[str, Any]:
    path = root / relative
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CreateContainerError(
            f'failed to create containerd container: cannot load seccomp profile "{path}": '
            f"open {path}: no such file or directory"
        ) from None
    except ValueError as exc:
        raise CreateContainerError(
            f'failed to create containerd container: decoding seccomp profile failed "{path}": {exc}'
        ) from None


def loaded_apparmor_profiles(files) -> dict[str, str]:
    """Profile name -> text, for the profile files loaded on the node."""
    loaded = {}
    for file in files:
        text = Path(file).read_text(encoding="utf-8")
        for name in _APPARMOR_NAME.findall(text):
            loaded[name] = text
    return loaded


def sandbox_refusal(pod: dict, container: dict, node) -> str | None:
    """Why a sandbox inside this container cannot create its namespaces, or None when it can.
    ``node``: seccomp_root, seccomp_default, apparmor (enabled), apparmor_profiles (name -> text).
    Raises CreateContainerError where the container is not created at all."""
    reasons = []
    seccomp = _effective(pod, container, "seccompProfile") or {
        "type": "RuntimeDefault" if node.seccomp_default else "Unconfined"
    }
    if seccomp["type"] == "RuntimeDefault":
        reasons.append("seccomp RuntimeDefault refuses unshare/clone(CLONE_NEWUSER) without CAP_SYS_ADMIN")
    elif seccomp["type"] == "Localhost":
        refused = seccomp_refusals(_localhost_seccomp(node.seccomp_root, seccomp["localhostProfile"]))
        if refused:
            reasons.append(f"seccomp {seccomp['localhostProfile']} refuses {', '.join(refused)}")
    apparmor = _effective(pod, container, "appArmorProfile")
    if not node.apparmor and apparmor and apparmor["type"] != "Unconfined":
        raise PodRejected("AppArmor", "Cannot enforce AppArmor: AppArmor is not enabled on the host")
    if node.apparmor:
        apparmor = apparmor or {"type": "RuntimeDefault"}
        if apparmor["type"] == "RuntimeDefault":
            reasons.append("AppArmor RuntimeDefault denies mount")
        elif apparmor["type"] == "Localhost":
            name = apparmor["localhostProfile"]
            text = node.apparmor_profiles.get(name)
            if text is None:
                raise PodRejected("AppArmor", f'Cannot enforce AppArmor: profile "{name}" is not loaded')
            missing = {"mount", "pivot_root"} - set(_APPARMOR_RULE.findall(text))
            if missing:
                reasons.append(f"AppArmor {name} denies {', '.join(sorted(missing))}")
    return "; ".join(reasons) or None
