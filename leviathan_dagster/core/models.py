"""Leviathan's own value types, shared by every module of the core, the worker and the Dagster wiring.

Frozen dataclasses only: the SDKs' objects (PyGithub, kubernetes, ...) never travel past the boundary
module that talks to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

BACKLOG_PATH = ".leviathan/backlog.yaml"
TASK_STATUSES = ("pending", "in_progress", "completed", "blocked", "cancelled")
DEFAULT_PRIORITY = 3
AGENT_BRANCH_PREFIX = "agent/"


def branch_name_for(task_id: str, attempt_id: str) -> str:
    """The branch an attempt pushes (``attempts`` re-exports it)."""
    return f"{AGENT_BRANCH_PREFIX}{task_id}-{attempt_id}"


@dataclass(frozen=True)
class Task:
    """One task of a target's backlog (seed format, see docs/backlog.md)."""

    id: str
    title: str
    ready: bool
    allowed_paths: tuple[str, ...]
    status: str = "pending"
    description: str = ""
    scope: str | None = None
    acceptance_criteria: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    priority: int = DEFAULT_PRIORITY
    # The generator that writes the change (docs, tests, claude); None: the one named by ``scope``. Read
    # from the backlog's ``generator:`` key (formerly ``executor:``, still read with a warning).
    generator: str | None = None
    # 1-based line of the task's entry in the backlog file, for error messages.
    line: int = 0
    # Keys we do not know: kept (and warned about), never dropped.
    extra: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    @property
    def executor(self) -> str | None:
        """The former name of ``generator`` (the backlog key was ``executor:``), kept for readers."""
        return self.generator


@dataclass(frozen=True)
class Backlog:
    source: str
    tasks: tuple[Task, ...]
    warnings: tuple[str, ...] = ()

    def get(self, task_id: str) -> Task | None:
        for task in self.tasks:
            if task.id == task_id:
                return task
        return None


@dataclass(frozen=True)
class Policy:
    """Per-target guardrails. Enforced by code on the actual diff and the actual forge calls."""

    allowed_path_prefixes: tuple[str, ...] = (".leviathan/", "docs/", "tests/")
    max_open_prs: int = 1
    max_running_attempts: int = 1
    max_attempts_per_task: int = 2
    backoff_seconds: int = 60
    circuit_breaker_failures: int = 2
    attempt_timeout_seconds: int = 900
    # Failures after which a task is escalated to a human (``task.escalated``); None: never.
    escalation_after: int | None = None
    # Model-driven generators (claude): test-failure feedback rounds, and the per-attempt budget checked
    # before every model call (tokens always; USD too when set, by the price table).
    max_repair_rounds: int = 2
    max_tokens_per_attempt: int = 500_000
    max_usd_per_attempt: float | None = None
    # Tokens per target per UTC day; None: no daily limit. Checked before an attempt is scheduled.
    daily_token_budget: int | None = None
    # When the final test run fails, open a DRAFT PR labelled failing (the attempt succeeds as
    # "tests: failed (draft)") instead of failing the attempt as tests_failed.
    allow_draft_on_failing_tests: bool = False
    # Infrastructure failures in a row after which a task waits (readiness ``infrastructure_streak``)
    # until an operator's run-now: they never count, so without this an outage would loop forever.
    infrastructure_streak_limit: int = 5


@dataclass(frozen=True)
class ResourceRequests:
    """CPU and memory one attempt asks for (seed 004's resource requests), as Kubernetes quantities."""

    cpu: str | None = None  # e.g. "500m", "2"
    memory: str | None = None  # e.g. "512Mi", "2Gi"


@dataclass(frozen=True)
class GithubSettings:
    """The ``github:`` section of a target (forge ``github``). Secrets stay under ``secrets:``
    (``github_token``, or ``github_app_private_key`` with ``app_id``), as environment references."""

    # REST base URL; None: derived from repo_url (api.github.com, or https://<host>/api/v3 for Enterprise).
    api_url: str | None = None
    # "owner/name"; None: derived from an https repo_url.
    repository: str | None = None
    # GitHub App authentication (else the github_token secret): app id and, optionally, installation id
    # (None: looked up for the repository).
    app_id: int | None = None
    installation_id: int | None = None
    # Open PRs as drafts; they are marked ready for review once the head commit's status is green.
    draft_until_green: bool = False
    # Seconds one HTTP request may take before it is abandoned (then retried as a transient failure).
    timeout_seconds: int = 15


@dataclass(frozen=True)
class TargetConfig:
    id: str
    repo_url: str
    branch: str = "main"
    forge: str = "local"
    executor: str = "local"
    # argv of the target's test command, run in the workspace after the generator (empty: no tests).
    test_command: tuple[str, ...] = ()
    policy: Policy = field(default_factory=Policy)
    # secret name -> environment variable that holds it (never the literal secret).
    secret_env: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    # The ``github:`` section (used by forge ``github``).
    github: GithubSettings = field(default_factory=GithubSettings)
    # The ``resources:`` section; a task's own ``resources`` key overrides it (None: cluster defaults).
    resources: ResourceRequests | None = None


@dataclass(frozen=True)
class KubernetesSettings:
    """The ``kubernetes:`` section: where and how the ``k8s`` executor runs worker Jobs."""

    namespace: str = "leviathan"
    image: str = "leviathan-worker:latest"
    service_account: str = "leviathan-worker"
    # Given to the worker as CONTROL_PLANE_URL (it then posts its events there); None: not set.
    control_plane_url: str | None = None
    # The Secret holding control-plane-token, github-token, claude-api-key, claude-model (seed 001).
    secret_name: str = "leviathan-secrets"
    ttl_seconds_after_finished: int = 3600
    # activeDeadlineSeconds = attempt_timeout_seconds + this (clone, generation and push).
    deadline_grace_seconds: int = 60
    # A pod that has not started after this long (unschedulable, image or secret missing) is given up.
    start_timeout_seconds: int = 300
    # PersistentVolumeClaim mounted at LEVIATHAN_HOME's path (local forge, artifacts); None: not mounted.
    home_volume_claim: str | None = None
    # ConfigMap holding leviathan.yaml (key leviathan.yaml), mounted for LEVIATHAN_CONFIG; None: not mounted.
    config_map: str | None = None
    # kubeconfig file for the orchestrator's API client; None: in-cluster config, else ~/.kube/config.
    kubeconfig: str | None = None


EVENT_LOG_BACKENDS = ("ndjson", "postgres")


@dataclass(frozen=True)
class EventLogSettings:
    """Where the event log lives: the ``event_log:`` section of leviathan.yaml."""

    # ndjson (a file under the Leviathan home, the embedded default) or postgres (many writers).
    backend: str = "ndjson"
    # ndjson: the log file; None means <home>/events/events.ndjson.
    path: str | None = None
    # postgres: the environment variable holding the DSN (a secret: never the DSN itself).
    dsn_env: str | None = None
    # postgres: tables are named <table_prefix>_events and <table_prefix>_head.
    table_prefix: str = "leviathan"


@dataclass(frozen=True)
class ControlPlaneToken:
    """One named control-plane token: its name is recorded as ``actor_id`` of what it appends."""

    name: str
    role: str  # operator | orchestrator (see core.events.access)
    secret_env: str  # the environment variable holding the token


@dataclass(frozen=True)
class ControlPlaneSettings:
    """The ``control_plane:`` section: named tokens, and the key per-attempt worker tokens derive from."""

    tokens: tuple[ControlPlaneToken, ...] = ()
    worker_key_env: str | None = None


@dataclass(frozen=True)
class ProjectConfig:
    source: str
    targets: tuple[TargetConfig, ...]
    # Global limit over all targets; when it binds, targets are served round-robin.
    max_concurrent_attempts: int = 4
    warnings: tuple[str, ...] = ()
    event_log: EventLogSettings = field(default_factory=EventLogSettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    control_plane: ControlPlaneSettings = field(default_factory=ControlPlaneSettings)
    # (target id, its problems) for targets left out because their own config is invalid; filled only
    # when the config is loaded with isolate_targets (the scheduler and the commands report them).
    broken_targets: tuple[tuple[str, str], ...] = ()

    def target(self, target_id: str) -> TargetConfig | None:
        for target in self.targets:
            if target.id == target_id:
                return target
        return None

    def broken_target(self, target_id: str) -> str | None:
        """The problems of target ``target_id`` if it was left out for its invalid config, else None."""
        return dict(self.broken_targets).get(target_id)


@dataclass(frozen=True)
class PullRequest:
    target_id: str
    number: int
    title: str
    body: str
    head: str
    base: str
    state: str  # open | merged | closed
    created_at: str
    url: str
    merged_at: str | None = None
    closed_at: str | None = None
    merge_commit_sha: str | None = None
    draft: bool = False
    # Logins (or org/team slugs) review was requested from.
    reviewers: tuple[str, ...] = ()

    def task_marker(self) -> str | None:
        """The ``<target>/<task>`` named by the hidden marker in the body, if any."""
        from leviathan_dagster.core.markers import parse_task_marker

        return parse_task_marker(self.body)


@dataclass(frozen=True)
class GeneratedChange:
    """What a generator wrote, relative to the workspace root."""

    files: tuple[str, ...]
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
