"""The typed models of ``leviathan.yaml``: the project, its targets and each target's policy.

The one source of truth for every key: its type, bounds, default and (the docstring under it) meaning.
``config`` builds them from the file and maps their validation errors to file and line; code builds them
directly. The sections live beside their features: ``config_github``, ``config_kubernetes``,
``config_event_log``, ``config_control_plane``.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo
from pydantic.dataclasses import dataclass

from leviathan_dagster.core.config.control_plane import ControlPlaneSettings
from leviathan_dagster.core.config.event_log import EventLogSettings
from leviathan_dagster.core.config.fields import MODEL_CONFIG, env_reference, file_context, invalid
from leviathan_dagster.core.config.github import GithubSettings
from leviathan_dagster.core.config.kubernetes import KubernetesSettings, ResourceRequests, resource_requests
from leviathan_dagster.core.errors import PolicyViolation

FORGES = ("local", "github")
EXECUTORS = ("local", "k8s", "k8s-stub")
_BRANCH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_MAX_BRANCH_LENGTH = 200
_URL_SCHEMES = ("https", "file", "ssh")
_URL_FIX = "use a local path, a file:// URL or an https:// URL"
_COMMAND_FIX = "write e.g. test_command: ['python', '-m', 'pytest', '-q']"
_PREFIXES_FIX = "list repository-relative directories, e.g. allowed_path_prefixes: ['docs/', '.leviathan/']"


def branch_problem(value: object) -> str | None:
    """Why ``value`` is not a branch name git accepts (``git check-ref-format --branch``), or None."""
    if not isinstance(value, str) or not _BRANCH_RE.fullmatch(value) or len(value) > _MAX_BRANCH_LENGTH:
        return "must be a branch name (letters, digits, '.', '_', '-', '/'; no spaces or newlines)"
    parts = value.split("/")
    if (
        ".." in value
        or value.endswith(("/", "."))
        or any(not part or part.startswith(".") or part.endswith(".lock") for part in parts)
    ):
        return "is not a valid git branch name (no '..', '//', '.lock', or '.' or '/' at the end)"
    return None


def _branch(value: object) -> str:
    problem = branch_problem(value)
    if problem is not None:
        raise invalid(f"{{label}} {problem}, got {{got}}", "write e.g. 'branch: main'")
    return value  # type: ignore[return-value]


def _path_prefixes(value: object) -> object:
    if not isinstance(value, list | tuple) or not value:
        raise invalid("{label} must be a non-empty list, got {got}", _PREFIXES_FIX)
    return value


def _policy_path(value: object) -> str:
    # Imported here: paths pulls in git helpers the models do not otherwise need.
    from leviathan_dagster.core.attempts.path_policy import check_policy_path

    try:
        if not isinstance(value, str):
            raise PolicyViolation(f"got {value!r}, not a path")
        return check_policy_path(value)
    except PolicyViolation as exc:
        raise invalid(f"{{label}} has a bad entry: {exc}", _PREFIXES_FIX) from None


PolicyPath = Annotated[str, BeforeValidator(_policy_path)]


@dataclass(frozen=True, config=MODEL_CONFIG)
class Policy:
    """Per-target guardrails. Enforced by code on the actual diff and the actual forge calls."""

    allowed_path_prefixes: Annotated[tuple[PolicyPath, ...], BeforeValidator(_path_prefixes)] = (
        ".leviathan/",
        "docs/",
        "tests/",
    )
    """Every path a change touches must be under one (repository-relative; never a `.git` directory)."""
    max_open_prs: int = Field(1, strict=True, ge=1, le=1_000)
    """Open `agent/` PRs at which the target stops starting attempts."""
    max_running_attempts: int = Field(1, strict=True, ge=1, le=1_000)
    """Attempts running or queued per target."""
    max_attempts_per_task: int = Field(2, strict=True, ge=1, le=1_000)
    """Counted attempts of one task (infrastructure failures don't count)."""
    backoff_seconds: int = Field(60, strict=True, ge=0, le=7 * 86_400)
    """Wait after a failed attempt before the next (at most a week)."""
    circuit_breaker_failures: int = Field(2, strict=True, ge=1, le=1_000)
    """Consecutive counted failures that stop the target until reset."""
    attempt_timeout_seconds: int = Field(900, strict=True, ge=1, le=86_400)
    """Wall clock for one attempt, tests included (at most a day: more would overflow the Job spec)."""
    escalation_after: int | None = Field(None, strict=True, ge=1, le=1_000, examples=[3])
    """Failures after which the task is escalated to a human (`task.escalated`); none: never."""
    max_repair_rounds: int = Field(2, strict=True, ge=0, le=20)
    """Model generators: times failing test output is fed back (0 allowed)."""
    max_tokens_per_attempt: int = Field(500_000, strict=True, ge=1, le=100_000_000)
    """Model tokens (input, output, cache) per attempt, checked before each model call."""
    max_usd_per_attempt: float | None = Field(None, strict=True, ge=0.01, le=10_000, examples=[2.5])
    """USD per attempt by the price table (`core/generators/claude/prices.py`); none: no USD limit."""
    daily_token_budget: int | None = Field(None, strict=True, ge=1, le=10_000_000_000, examples=[5_000_000])
    """Model tokens per target per UTC day, checked before an attempt is scheduled (model tasks then wait
    with `daily_budget`); none: no daily limit."""
    allow_draft_on_failing_tests: bool = Field(False, strict=True)
    """`true`: a failing final test run opens a draft PR labelled failing (`tests: failed (draft)`)
    instead of failing the attempt as `tests_failed`."""
    infrastructure_streak_limit: int = Field(5, strict=True, ge=1, le=1_000)
    """Infrastructure failures of one task in a row after which it waits (readiness
    `infrastructure_streak`) until an operator's run-now: they never count, so an outage would loop."""


POLICY_KEYS = tuple(Policy.__pydantic_fields__)


def _target_id(value: object) -> str:
    # Imported here: the backlog rules import the section modules this one is built from.
    from leviathan_dagster.core.backlog.rules import ID_FIX, id_problem

    problem = id_problem(value)
    if problem is not None:
        raise invalid(f"{{label}} {problem}, got {{got}}", ID_FIX)
    return value  # type: ignore[return-value]


def _repo_url(value: object, info: ValidationInfo) -> str:
    """URLs stay as written; local paths from a file are made absolute against the file's folder.

    Only what a file says is checked: code passes URLs it was given (the worker's TARGET_REPO_URL, a test
    double's), and the forge refuses a credential in one again where it uses it (``derive_location``)."""
    if file_context(info) is None and isinstance(value, str):
        return value
    if not isinstance(value, str) or not value.strip():
        raise invalid("{label}: must be a path or URL, got {got}", _URL_FIX)
    if any(ord(char) < 32 or ord(char) == 127 for char in value) or value != value.strip():
        raise invalid(
            "{label}: contains spaces or control characters (a newline?) at its ends or inside", _URL_FIX
        )
    if re.match(r"^[a-z][a-z0-9+.-]*://[^/@]*:[^/@]*@", value, re.IGNORECASE):
        raise invalid(
            "{label}: carries a password or token (user:secret@); credentials are never written in a URL, "
            "they are referenced under 'secrets:' (e.g. github_token: {env: GITHUB_TOKEN})",
            _URL_FIX,
        )
    if "://" in value:
        scheme = value.split("://", 1)[0]
        # Plain http only to this machine (a local GitHub Enterprise or test double): never over a network.
        loopback = re.match(r"^http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?/", value) is not None
        if scheme not in _URL_SCHEMES and not loopback:
            available = ", ".join(_URL_SCHEMES)
            raise invalid(
                f"{{label}}: URL scheme {scheme!r} is not supported (available: {available})", _URL_FIX
            )
        return value
    if re.match(r"^[\w.-]+@[\w.-]+:", value):  # scp-like ssh: git@github.com:owner/repo.git
        return value
    base_dir = file_context(info).base_dir  # type: ignore[union-attr]
    return os.path.normpath(base_dir.expanduser().absolute() / os.path.expanduser(value))


def _test_command(value: object) -> tuple[str, ...]:
    from leviathan_dagster.core.redaction import looks_like_credential

    if value is None:
        return ()
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            raise invalid(f"{{label}} cannot be split: {exc}", "check its quotes") from None
    if not isinstance(value, list | tuple) or not all(isinstance(part, str) for part in value):
        raise invalid("{label} must be a list of strings, got {got}", _COMMAND_FIX)
    # What the worker could never run: an empty program name, or NUL (no argv can carry one).
    if value and (not value[0].strip() or any("\x00" in part for part in value)):
        raise invalid("{label} names no program (empty first item) or holds a NUL byte", _COMMAND_FIX)
    # The command runs sandboxed and without credentials; one written into it would be in every log.
    for number, part in enumerate(value, start=1):
        if looks_like_credential(part):
            raise invalid(
                f"{{label}} holds a literal credential (argument {number})",
                "remove it: test commands run in the sandbox without credentials or network; "
                "tests that need a service should use a local double",
            )
    return tuple(value)


def _resources(value: object) -> ResourceRequests | None:
    if value is None or isinstance(value, ResourceRequests):
        return value
    try:
        return resource_requests(value)
    except ValueError as exc:
        raise invalid(f"{{label}} {exc}", "write e.g. 'resources: {cpu: 500m, memory: 1Gi}'") from None


def _read_only(secrets: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(secrets))


SecretReference = env_reference()
SecretEnv = Annotated[Mapping[str, SecretReference], AfterValidator(_read_only)]


@dataclass(frozen=True, config=MODEL_CONFIG)
class TargetConfig:
    """One repository Leviathan works on (an entry of ``targets:``)."""

    id: Annotated[str, BeforeValidator(_target_id)]
    """`[A-Za-z0-9][A-Za-z0-9._-]*` in full, at most 100 characters, valid in a git branch name (no `..`,
    no trailing `.lock` or `.`), unique."""
    repo_url: Annotated[str, BeforeValidator(_repo_url)]
    """Local path (relative to this file) or `file://` URL for the local forge; https for GitHub; never
    with a password or token in it (`user:secret@`)."""
    branch: Annotated[str, BeforeValidator(_branch)] = "main"
    """Base branch: the backlog is read here, PRs target it (`git check-ref-format --branch` rules)."""
    forge: Literal["local", "github"] = "local"
    """`local` or `github` (see the `github:` section)."""
    executor: Literal["local", "k8s", "k8s-stub"] = "local"
    """`local`, `k8s` (a worker Job per attempt) or `k8s-stub` (renders the Job, submits nothing);
    `leviathan run --executor` overrides."""
    test_command: Annotated[tuple[str, ...], BeforeValidator(_test_command)] = Field(
        (), examples=[["python", "-m", "pytest", "-q"]]
    )
    """argv list (or a string, split like a shell) run in the workspace after generation, in the sandbox
    (no network, no credential; a literal credential here is an error); none: no tests."""
    policy: Policy = Field(default_factory=Policy, examples=[{"max_open_prs": 1}])
    """The target's guardrails (below); its keys may also sit directly on the target."""
    secret_env: SecretEnv = Field(
        default_factory=lambda: MappingProxyType({}),
        validation_alias="secrets",
        examples=[{"github_token": {"env": "GITHUB_TOKEN"}}],
    )
    """`name: {env: VAR}`: each secret by the environment variable that holds it; literals are errors."""
    github: GithubSettings = Field(default_factory=GithubSettings, examples=[{"app_id": 1}])
    """The `github:` section (forge `github`)."""
    resources: Annotated[ResourceRequests | None, BeforeValidator(_resources)] = Field(
        None, examples=[{"cpu": "500m", "memory": "1Gi"}]
    )
    """`{cpu: 500m, memory: 1Gi}` (Kubernetes quantities) for the worker Job and the run pod; a backlog
    task's own `resources:` replaces it; none: the cluster's defaults."""


@dataclass(frozen=True, config=MODEL_CONFIG)
class ProjectConfig:
    """The whole ``leviathan.yaml``: the targets and what they share."""

    source: str
    """Where the config was read from (the file's path)."""
    targets: tuple[TargetConfig, ...]
    """The targets (with `isolate_targets`, only those whose own config is valid)."""
    max_concurrent_attempts: int = Field(4, strict=True, ge=1, le=1_000)
    """Global limit over all targets; when it binds, targets are served round-robin by last attempt time."""
    warnings: tuple[str, ...] = ()
    """Problems that do not stop anything (unknown keys, keys the chosen backend ignores)."""
    event_log: EventLogSettings = Field(default_factory=EventLogSettings, examples=[{"backend": "postgres"}])
    """The `event_log:` section."""
    kubernetes: KubernetesSettings = Field(
        default_factory=KubernetesSettings, examples=[{"namespace": "leviathan"}]
    )
    """The `kubernetes:` section (the `k8s` and `k8s-stub` executors)."""
    control_plane: ControlPlaneSettings = Field(
        default_factory=ControlPlaneSettings, examples=[{"tokens": []}]
    )
    """The `control_plane:` section."""
    broken_targets: tuple[tuple[str, str], ...] = ()
    """(target id, its problems) for targets left out because their own config is invalid; filled only
    when loaded with `isolate_targets` (the scheduler and the commands report them)."""

    def target(self, target_id: str) -> TargetConfig | None:
        for target in self.targets:
            if target.id == target_id:
                return target
        return None

    def broken_target(self, target_id: str) -> str | None:
        """The problems of target ``target_id`` if it was left out for its invalid config, else None."""
        return dict(self.broken_targets).get(target_id)
