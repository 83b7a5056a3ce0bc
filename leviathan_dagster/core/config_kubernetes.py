"""The ``kubernetes:`` project section and the ``resources:`` target section of leviathan.yaml.

kubernetes:                               # used by the k8s and k8s-stub executors
  namespace: leviathan
  image: ghcr.io/acme/leviathan:1.4.0
  service_account: leviathan-worker
  control_plane_url: http://leviathan-control-plane:8000
  secret_name: leviathan-secrets
  ttl_seconds_after_finished: 3600
  # The worker container's profiles (core/executors/k8s_security.py); the defaults are shipped in
  # deploy/k8s/node-setup/ and must be installed on every node.
  worker_seccomp_profile: localhost/leviathan/worker-sandbox.json
  worker_apparmor_profile: localhost/leviathan-worker-sandbox
  worker_host_users: true
targets:
  - id: api
    resources: {cpu: 500m, memory: 1Gi}   # a task's own `resources:` key overrides this
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import yaml

from leviathan_dagster.core.config_sections import project_section, target_section
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.executors.k8s_security import apparmor_problem, seccomp_problem
from leviathan_dagster.core.models import KubernetesSettings, ResourceRequests
from leviathan_dagster.core.yamlnodes import Reporter, YamlDocument, describe

# Kubernetes quantities as the API server accepts them for requests (no exponent forms: nobody writes them).
CPU_RE = re.compile(r"^(?:[0-9]+m|[0-9]+(?:\.[0-9]{1,3})?)$")
MEMORY_RE = re.compile(r"^[0-9]+(?:\.[0-9]+)?(?:Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
DNS_LABEL_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?$")
_IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
_NAMES = {"service_account", "secret_name", "home_volume_claim", "config_map"}
# Inclusive bounds (docs/configuration.md): beyond them a value overflows the Job spec or is a typo.
_INTS = {
    "ttl_seconds_after_finished": (0, 30 * 86_400),
    "deadline_grace_seconds": (0, 86_400),
    "start_timeout_seconds": (1, 86_400),
}
KUBERNETES_KEYS = tuple(f.name for f in dataclasses.fields(KubernetesSettings))


def resource_requests(value: Any) -> ResourceRequests:
    """ResourceRequests from a ``{cpu, memory}`` mapping; raises ValueError naming the bad key."""
    if not isinstance(value, dict) or not value:
        raise ValueError("must be a mapping with 'cpu' and/or 'memory', e.g. {cpu: 500m, memory: 1Gi}")
    unknown = sorted(set(value) - {"cpu", "memory"})
    if unknown:
        raise ValueError(f"has unknown key(s) {', '.join(map(str, unknown))} (known: cpu, memory)")
    found: dict[str, str] = {}
    for name, pattern, example in (("cpu", CPU_RE, "500m or 2"), ("memory", MEMORY_RE, "512Mi or 2Gi")):
        if name not in value:
            continue
        raw = value[name]
        text = str(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else raw
        if not isinstance(text, str) or not pattern.match(text):
            raise ValueError(f"{name} {raw!r} is not a Kubernetes quantity (e.g. {example})")
        found[name] = text
    return ResourceRequests(**found)


def task_resources(task_extra: Any, task_id: str) -> ResourceRequests | None:
    """A backlog task's own ``resources`` key (kept in Task.extra), or None; ConfigError if malformed."""
    if not task_extra or "resources" not in task_extra:
        return None
    try:
        return resource_requests(task_extra["resources"])
    except ValueError as exc:
        raise ConfigError(
            f"backlog task {task_id!r}: field 'resources' {exc}. Fix: write e.g. 'resources: {{cpu: 1, "
            "memory: 2Gi}' on the task"
        ) from None


@target_section("resources")
def parse_resources(doc: YamlDocument, node: yaml.Node, who: str, report: Reporter, base_dir: Path):
    try:
        return resource_requests(doc.value(node))
    except ValueError as exc:
        report.error(
            node, who, f"field 'resources' {exc}", "write e.g. 'resources: {cpu: 500m, memory: 1Gi}'"
        )
        return None


@project_section("kubernetes")
def parse_kubernetes(
    doc: YamlDocument, node: yaml.Node, who: str, report: Reporter, base_dir: Path
) -> KubernetesSettings:
    if not isinstance(node, yaml.MappingNode):
        report.error(
            node, who, f"'kubernetes' must be a mapping, got {describe(node)}", "write e.g. 'kubernetes: {}'"
        )
        return KubernetesSettings()
    values: dict[str, Any] = {}
    items = report.items(node, who)
    for name, (key, value_node) in items.items():
        value = doc.value(value_node)
        problem = _check(name, value)
        if name not in KUBERNETES_KEYS:
            known = f" (known: {', '.join(KUBERNETES_KEYS)})"
            report.unknown_key(key, who, f"field 'kubernetes.{name}'", KUBERNETES_KEYS, items, known)
        elif problem:
            example = getattr(KubernetesSettings(), name)
            fix = f"write e.g. '{name}: {example}'" if example is not None else f"correct 'kubernetes.{name}'"
            report.error(value_node, who, f"kubernetes.{name} {problem}, got {describe(value_node)}", fix)
        elif name == "kubeconfig":
            values[name] = os.path.normpath(Path(base_dir).expanduser().absolute() / Path(value).expanduser())
        else:
            values[name] = value
    return KubernetesSettings(**values)


def _check(name: str, value: Any) -> str | None:
    """Why ``value`` is not valid for kubernetes.<name> (with the fix), or None."""
    if name == "namespace" and not (isinstance(value, str) and DNS_LABEL_RE.match(value)):
        return "must be a DNS-1123 label (lowercase letters, digits, '-'; e.g. 'leviathan')"
    if name in _NAMES and not (isinstance(value, str) and DNS_SUBDOMAIN_RE.match(value)):
        return "must be a Kubernetes object name (lowercase letters, digits, '-', '.')"
    if name == "image" and not (isinstance(value, str) and _IMAGE_RE.match(value)):
        return "must be an image reference (e.g. 'ghcr.io/acme/leviathan:1.4.0')"
    if name == "control_plane_url" and not (isinstance(value, str) and re.match(r"^https?://[^\s/]+", value)):
        return "must be an http(s):// URL (e.g. 'http://leviathan-control-plane:8000')"
    if name == "kubeconfig" and not (isinstance(value, str) and value.strip()):
        return "must be a file path"
    if name == "worker_seccomp_profile":
        return seccomp_problem(value)
    if name == "worker_apparmor_profile":
        return apparmor_problem(value)
    if name == "worker_host_users" and not isinstance(value, bool):
        return "must be true or false"
    if name in _INTS:
        minimum, maximum = _INTS[name]
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            return f"must be an integer from {minimum:,} to {maximum:,}"
    return None
