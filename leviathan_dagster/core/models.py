"""Leviathan's own value types, shared by every module of the core, the worker and the Dagster wiring.

Frozen dataclasses only: the SDKs' objects (PyGithub, kubernetes, ...) never travel past the boundary
module that talks to them. The config's types (``Policy``, ``TargetConfig``, ``ProjectConfig`` and the
sections) are pydantic dataclasses defined in ``config_models`` and the section modules; they are named
here too, as they always were (loaded on first use: the models import validators that import this module).
"""

from __future__ import annotations

import importlib
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
        from leviathan_dagster.core.attempts.markers import parse_task_marker

        return parse_task_marker(self.body)


@dataclass(frozen=True)
class GeneratedChange:
    """What a generator wrote, relative to the workspace root."""

    files: tuple[str, ...]
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


# name -> module defining it (config_models and the section modules).
_CONFIG_TYPES = {
    "Policy": "config.models",
    "TargetConfig": "config.models",
    "ProjectConfig": "config.models",
    "GithubSettings": "config.github",
    "KubernetesSettings": "config.kubernetes",
    "ResourceRequests": "config.kubernetes",
    "EventLogSettings": "config.event_log",
    "EVENT_LOG_BACKENDS": "config.event_log",
    "ControlPlaneSettings": "config.control_plane",
    "ControlPlaneToken": "config.control_plane",
}


def __getattr__(name: str) -> Any:
    if name in _CONFIG_TYPES:
        module = importlib.import_module(f"leviathan_dagster.core.{_CONFIG_TYPES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
