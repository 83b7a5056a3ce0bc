"""The ``kubernetes:`` project section and the ``resources:`` target section of leviathan.yaml.

kubernetes:                               # used by the k8s and k8s-stub executors
  namespace: leviathan
  image: ghcr.io/acme/leviathan:1.4.0
  service_account: leviathan-worker
  control_plane_url: http://leviathan-control-plane:8000
  secret_name: leviathan-secrets
  ttl_seconds_after_finished: 3600
  # The worker container's profiles (core/executors/k8s/security.py); the defaults are shipped in
  # deploy/k8s/node-setup/ and must be installed on every node.
  worker_seccomp_profile: localhost/leviathan/worker-sandbox.json
  worker_apparmor_profile: localhost/leviathan-worker-sandbox
  worker_host_users: true
targets:
  - id: api
    resources: {cpu: 500m, memory: 1Gi}   # a task's own `resources:` key overrides this
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field
from pydantic.dataclasses import dataclass

from leviathan_dagster.core.config.fields import MODEL_CONFIG, checked_by, matching, resolve_path
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.executors.k8s.security import apparmor_problem, seccomp_problem

# Kubernetes quantities as the API server accepts them for requests (no exponent forms: nobody writes them).
CPU_RE = re.compile(r"^(?:[0-9]+m|[0-9]+(?:\.[0-9]{1,3})?)$")
MEMORY_RE = re.compile(r"^[0-9]+(?:\.[0-9]+)?(?:Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
DNS_LABEL_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?$")
_IMAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")
_URL_RE = re.compile(r"https?://[^\s/]+\S*")
_PATH_RE = re.compile(r"(?s).*\S.*")

Namespace = matching(
    DNS_LABEL_RE, "must be a DNS-1123 label (lowercase letters, digits, '-'; e.g. 'leviathan')"
)
ObjectName = matching(
    DNS_SUBDOMAIN_RE, "must be a Kubernetes object name (lowercase letters, digits, '-', '.')"
)
Image = matching(_IMAGE_RE, "must be an image reference (e.g. 'ghcr.io/acme/leviathan:1.4.0')")
ControlPlaneUrl = matching(_URL_RE, "must be an http(s):// URL (e.g. 'http://leviathan-control-plane:8000')")
KubeconfigPath = Annotated[matching(_PATH_RE, "must be a file path"), AfterValidator(resolve_path)]
Cpu = matching(CPU_RE, "is not a Kubernetes quantity (e.g. 500m or 2)")
Memory = matching(MEMORY_RE, "is not a Kubernetes quantity (e.g. 512Mi or 2Gi)")
SeccompProfile = checked_by(seccomp_problem)
AppArmorProfile = checked_by(apparmor_problem)


@dataclass(frozen=True, config=MODEL_CONFIG)
class ResourceRequests:
    """CPU and memory one attempt asks for (seed 004's resource requests), as Kubernetes quantities."""

    cpu: Cpu | None = Field(None, examples=["500m"])
    """CPU request, e.g. `500m` or `2`; none: the cluster's default."""
    memory: Memory | None = Field(None, examples=["1Gi"])
    """Memory request, e.g. `512Mi` or `2Gi`; none: the cluster's default."""


@dataclass(frozen=True, config=MODEL_CONFIG)
class KubernetesSettings:
    """The ``kubernetes:`` section: where and how the ``k8s`` executor runs worker Jobs."""

    namespace: Namespace = "leviathan"
    """Where worker Jobs are created."""
    image: Image = "leviathan-worker:latest"
    """The image holding `python -m worker` (the project's Dockerfile)."""
    service_account: ObjectName = "leviathan-worker"
    """The worker pod's service account (its API token is not mounted)."""
    control_plane_url: ControlPlaneUrl | None = Field(None, examples=["http://leviathan-control-plane:8000"])
    """Given to the worker as `CONTROL_PLANE_URL`; the worker then posts its events there, with the
    Secret's `control-plane-token` (then required), or, when `control_plane.worker_token_key` is set, a
    token minted for its attempt alone (the orchestrator must hold the key too; docs/control-plane.md)."""
    secret_name: ObjectName = "leviathan-secrets"
    """Secret with `control-plane-token`, `github-token`, `claude-api-key`, `claude-model` (seed 001),
    read by `secretKeyRef`."""
    ttl_seconds_after_finished: int = Field(3600, strict=True, ge=0, le=30 * 86_400)
    """Finished Jobs (and their logs) are removed after this."""
    deadline_grace_seconds: int = Field(60, strict=True, ge=0, le=86_400)
    """`activeDeadlineSeconds` = `attempt_timeout_seconds` + this (clone, generation, push)."""
    start_timeout_seconds: int = Field(300, strict=True, ge=1, le=86_400)
    """A pod not started by then (unschedulable, image or Secret missing) is deleted; the attempt ends
    `infrastructure`."""
    home_volume_claim: ObjectName | None = Field(None, examples=["leviathan-home"])
    """PersistentVolumeClaim mounted at `LEVIATHAN_HOME`'s path (the local forge, artifacts and NDJSON
    log shared with the orchestrator); none: not mounted."""
    config_map: ObjectName | None = Field(None, examples=["leviathan-config"])
    """ConfigMap with key `leviathan.yaml`, mounted at `/etc/leviathan` and used as `LEVIATHAN_CONFIG`;
    none: not mounted."""
    kubeconfig: KubeconfigPath | None = Field(None, examples=["~/.kube/config"])
    """kubeconfig for the orchestrator's client (relative to this file); none: in-cluster config, else
    `~/.kube/config`."""
    worker_seccomp_profile: SeccompProfile = "localhost/leviathan/worker-sandbox.json"
    """The worker container's seccomp profile: `localhost/<path below the kubelet's seccomp root>`,
    `RuntimeDefault` or `Unconfined`. RuntimeDefault refuses the user namespaces bubblewrap needs, so the
    default is the profile shipped in `deploy/k8s/node-setup/`, installed on every node
    (docs/deploy-kubernetes.md, "The worker's sandbox on a real node")."""
    worker_apparmor_profile: AppArmorProfile = "localhost/leviathan-worker-sandbox"
    """The worker container's AppArmor profile: `localhost/<loaded profile>`, `RuntimeDefault`,
    `Unconfined`, or `none` (a node without AppArmor: the field is omitted)."""
    worker_host_users: bool = Field(True, strict=True)
    """false: the worker pod gets its own user namespace (`hostUsers: false`, Kubernetes 1.33+)."""


KUBERNETES_KEYS = tuple(KubernetesSettings.__pydantic_fields__)


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
