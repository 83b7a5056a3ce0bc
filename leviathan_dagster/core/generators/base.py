"""The generator seam."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from leviathan_dagster.core.errors import LeviathanError
from leviathan_dagster.core.generators.usage import UsageRecorder
from leviathan_dagster.core.models import GeneratedChange, Policy, Task


@dataclass(frozen=True)
class GenerationContext:
    """What the harness gives a generator beyond the task and the workspace.

    Deterministic generators ignore it. A model-driven generator runs the target's tests through it (with
    the credential-free ``test_environment`` the worker built, never its own environment), keeps to the
    policy's limits and the attempt's ``deadline`` (``time.monotonic()`` seconds), and records every
    model call into ``usage`` as it happens, so a failing or killed attempt still leaves its token counts.
    """

    test_command: tuple[str, ...] = ()
    test_environment: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    policy: Policy = field(default_factory=Policy)
    deadline: float | None = None
    usage: UsageRecorder = field(default_factory=UsageRecorder)


@dataclass(frozen=True)
class TaskProblem:
    """Why a generator could never serve a task, found when the backlog is validated (before any attempt
    is spent on it): the task's ``field`` (and ``item``, the index in that field's list), message and fix."""

    field: str
    message: str
    fix: str
    item: int | None = None


class GenerationStopped(LeviathanError):
    """A generator ended the attempt without a change to push; the attempt fails as ``failure_type``.

    ``record`` is the generator's final record (turns, tests, tokens; never prompts or responses).
    """

    def __init__(self, failure_type: str, summary: str, record: Mapping | None = None) -> None:
        super().__init__(summary)
        self.failure_type = failure_type
        self.summary = summary
        self.record = dict(record or {})


class Generator(ABC):
    """Writes one task's change into a checked-out workspace.

    Deterministic generators give the same output for the same task and the same repository state.
    A generator raises GeneratorError for a task it cannot serve (the attempt fails as
    ``executor_error``) and GenerationStopped for an attempt it ended on purpose (budget, scope, tests);
    it never touches paths outside the task's ``allowed_paths`` on purpose, and the harness checks the
    actual diff anyway.
    """

    name: str

    @classmethod
    def check_task(cls, task: Task) -> list[TaskProblem]:
        """Problems that would make every attempt of ``task`` fail; none by default. Called by backlog
        validation, so keep it cheap and free of I/O."""
        return []

    @abstractmethod
    def generate(
        self, task: Task, workspace: Path, context: GenerationContext | None = None
    ) -> GeneratedChange:
        """Write the change; return the files written (relative, POSIX) and a one-line summary."""
