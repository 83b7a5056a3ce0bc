"""The executor seam: run one attempt's worker somewhere and report how it ended."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import TargetConfig


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


@dataclass(frozen=True)
class ExecutionResult:
    exit_code: int | None
    timed_out: bool
    log_tail: str
    # How the attempt ended when the worker could not record it (None: timeout or infrastructure, from
    # ``timed_out``). ``executor_error`` when the executor refused to run it (k8s-stub, bad cluster config).
    failure_type: str | None = None


class Executor(ABC):
    name: str

    @abstractmethod
    def run(self, spec: AttemptSpec) -> ExecutionResult:
        """Run the worker for ``spec`` to the end (or its deadline)."""

    def cleanup(self, attempt_id: str) -> None:  # noqa: B027 - optional hook
        """Release whatever the attempt left behind (pods, workspaces)."""


def inherited_environment() -> dict[str, str]:
    return dict(os.environ)
