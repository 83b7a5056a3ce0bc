"""RBAC as the API server's authorizer applies it: a ServiceAccount may do what a Role (or ClusterRole)
bound to it in the namespace allows — verb, API group, resource (``pods/log`` for a subresource) and
resourceNames — and nothing else. A refusal is the API server's own 403 Status body."""

from __future__ import annotations

from typing import Any


def _matches(values: list[str] | None, wanted: str) -> bool:
    return bool(values) and ("*" in values or wanted in values)


def rule_allows(rule: dict[str, Any], verb: str, group: str, resource: str, name: str | None) -> bool:
    if not (_matches(rule.get("verbs"), verb) and _matches(rule.get("apiGroups"), group)):
        return False
    if not _matches(rule.get("resources"), resource):
        # "pods/*" covers every subresource of pods.
        base, _, sub = resource.partition("/")
        if not (sub and _matches(rule.get("resources"), f"{base}/*")):
            return False
    names = rule.get("resourceNames")
    return not names or (name is not None and name in names)


def subject_matches(subject: dict[str, Any], namespace: str, account: str) -> bool:
    kind = subject.get("kind")
    if kind == "ServiceAccount":
        return subject.get("name") == account and subject.get("namespace", namespace) == namespace
    if kind == "Group":
        return subject.get("name") in ("system:serviceaccounts", f"system:serviceaccounts:{namespace}")
    if kind == "User":
        return subject.get("name") == f"system:serviceaccount:{namespace}:{account}"
    return False


def forbidden(
    user: str, verb: str, group: str, resource: str, namespace: str | None, name: str | None
) -> dict[str, Any]:
    base = resource.split("/")[0]
    qualified = f"{base}.{group}" if group else base
    subject = f'{qualified} "{name}"' if name else qualified
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    details: dict[str, Any] = {"kind": base}
    if name:
        details = {"name": name, **({"group": group} if group else {}), "kind": base}
    elif group:
        details = {"group": group, "kind": base}
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": (
            f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
            f'in API group "{group}"{where}'
        ),
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    }
