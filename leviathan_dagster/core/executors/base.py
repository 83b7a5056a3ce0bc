"""The executor seam: run one attempt's worker somewhere and report how it ended."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from leviathan_dagster.core.errors import LeviathanError
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import TargetConfig
from leviathan_dagster.core.redaction import redact


@dataclass(frozen=True)
class AttemptSpec:
    target: TargetConfig
    task_id: str
    attempt_id: str
    attempt_number: int
    config_path: Path
    home: LeviathanHome
    # The seq of the attempt's ``attempt.created``: every event the worker writes comes after it.
    created_seq: int | None = None

    def worker_environment(self) -> dict[str, str]:
        """The seed's worker environment contract (plus where Leviathan's state lives)."""
        return {
            "TARGET_NAME": self.target.id,
            "TARGET_REPO_URL": self.target.repo_url,
            "TARGET_BRANCH": self.target.branch,
            "TASK_ID": self.task_id,
            "ATTEMPT_ID": self.attempt_id,
            "ATTEMPT_NUMBER": str(self.attempt_number),
            "LEVIATHAN_HOME": str(self.home.root),
            "LEVIATHAN_CONFIG": str(self.config_path),
            "LEVIATHAN_WORKSPACE_DIR": str(self.home.workspaces),
            # The worker never reads the log: this is where its events' duplicate check may begin.
            **({"LEVIATHAN_EVENT_LOG_AFTER_SEQ": str(self.created_seq)} if self.created_seq else {}),
        }


# What a result keeps of the worker's output: it is shown in Dagster's run storage and its start becomes
# the attempt's summary when the worker could not record one, so it must stay small whatever the
# worker printed (a test command of 20,000 characters is logged on one line).
LOG_TAIL_LINES = 20
LOG_TAIL_CHARS = 4000
_HEADLINE_CHARS = 500


def log_tail(output: str | None, secrets: Iterable[str] = (), *, headline: str = "") -> str:
    """``headline`` (the executor's own words: first, so a summary begins with them), then the end of
    ``output``; at most LOG_TAIL_LINES lines and LOG_TAIL_CHARS characters, redacted by ``secrets``
    (before it is cut, so no cut leaves part of a secret behind)."""
    secrets = tuple(secrets)
    headline = redact(headline, secrets)[:_HEADLINE_CHARS]
    keep = LOG_TAIL_LINES - (1 if headline else 0)
    tail = redact("\n".join((output or "").strip().splitlines()[-keep:]), secrets)
    room = LOG_TAIL_CHARS - len(headline) - 1
    if len(tail) > room:
        tail = "…" + tail[-(room - 1) :]
    return "\n".join(part for part in (headline, tail) if part)


@dataclass(frozen=True)
class ExecutionResult:
    """How the executor saw the worker end. The worker records the attempt's outcome itself; this only
    decides it when the worker could not (``failure_type``; None: ``infrastructure``, or ``timeout``
    when ``timed_out``). Every executor passes ``tests/executor_contract.py``: a worker the executor
    had to kill at its own deadline (attempt_timeout_seconds + a grace) is ``infrastructure`` with
    ``timed_out``; one it refused to run as configured (k8s-stub, bad cluster config) is
    ``executor_error``; ``log_tail`` comes from ``log_tail()``."""

    exit_code: int | None
    timed_out: bool
    log_tail: str
    failure_type: str | None = None


class Executor(ABC):
    name: str

    @abstractmethod
    def run(self, spec: AttemptSpec) -> ExecutionResult:
        """Run the worker for ``spec`` to the end (or its deadline)."""

    def cleanup(self, attempt_id: str) -> None:  # noqa: B027 - optional hook
        """Release whatever the attempt left behind (pods, workspaces)."""


# What a worker process inherits from the orchestrator: what any process needs to run (locale, paths,
# proxies, CA bundles), the Claude settings, and nothing else. Credentials the attempt uses are added by
# name (``worker_process_environment``); an unrelated AWS_SECRET_ACCESS_KEY or another target's token
# never reaches a worker.
WORKER_ENV_ALLOWLIST = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TERM", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
        "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
        "CONTROL_PLANE_URL", "CONTROL_PLANE_TOKEN", "LEVIATHAN_BWRAP", "LEVIATHAN_SANDBOX_READ_ONLY",
    }
)  # fmt: skip
WORKER_ENV_PREFIXES = ("LC_", "LEVIATHAN_CLAUDE_")


def worker_process_environment(spec: AttemptSpec, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of ``spec``'s worker process: the allowlist above, the variables the
    target's ``secrets:`` and the event log's ``dsn_env`` name (the worker clones, pushes and records
    with them; it never hands them to code it runs), then the worker contract."""
    source = os.environ if environ is None else environ
    env = {
        key: value
        for key, value in source.items()
        if key in WORKER_ENV_ALLOWLIST or key.startswith(WORKER_ENV_PREFIXES)
    }
    referenced = set(spec.target.secret_env.values())
    dsn_env = _event_log_dsn_env(spec.config_path)
    if dsn_env:
        referenced.add(dsn_env)
    env.update({key: source[key] for key in referenced if key in source})
    env.update(spec.worker_environment())
    return env


def _event_log_dsn_env(config_path: Path) -> str | None:
    from leviathan_dagster.core.config.project import load_project_config  # the config imports the executors

    try:
        return load_project_config(config_path).event_log.dsn_env
    except LeviathanError:
        return None  # the worker reports the bad config itself, with file and line
