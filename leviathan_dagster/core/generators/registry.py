"""Generators by name, and which one serves a task. A dict from name to class is the whole plugin system."""

from __future__ import annotations

import importlib

from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.generators.base import Generator
from leviathan_dagster.core.models import Task

# Name -> "module:class", imported when a generator is made: a worker running a docs task never loads
# the Claude generator's modules (its SDK, templates and prompts), and neither does the scheduler,
# which only needs the names to judge readiness.
GENERATORS: dict[str, str] = {
    "docs": "leviathan_dagster.core.generators.docs:DocsGenerator",
    "tests": "leviathan_dagster.core.generators.tests:TestsGenerator",
    "claude": "leviathan_dagster.core.generators.claude:ClaudeGenerator",
}
# Generators that spend model tokens: their tasks are held back by a target's daily_token_budget.
METERED_GENERATORS = frozenset({"claude"})


def _available() -> str:
    return ", ".join(sorted(GENERATORS))


def get_generator(name: str) -> Generator:
    """A new generator named ``name``; ConfigError listing the available names when there is none."""
    where = GENERATORS.get(name)
    if where is None:
        raise ConfigError(f"generator {name!r} is unknown (available: {_available()})")
    module, _, class_name = where.partition(":")
    generator_class: type[Generator] = getattr(importlib.import_module(module), class_name)
    return generator_class()


def _task_label(task: Task) -> str:
    return f"task {task.id!r}" + (f" (backlog line {task.line})" if task.line else "")


def generator_name_for(task: Task) -> str:
    """The generator that serves ``task``: its ``executor`` if set, else its ``scope`` if that names one."""
    if task.executor:
        if task.executor not in GENERATORS:
            raise ConfigError(
                f"{_task_label(task)}: executor {task.executor!r} is unknown (available: {_available()})"
            )
        return task.executor
    if task.scope in GENERATORS:
        return task.scope
    scope_note = f" and its scope {task.scope!r} names no generator" if task.scope else ""
    raise ConfigError(
        f"{_task_label(task)} has no executor{scope_note}; "
        "set `executor: docs`, `executor: tests` or `executor: claude` on the task"
    )


def generator_for(task: Task) -> Generator:
    """The generator instance that serves ``task`` (see ``generator_name_for``)."""
    return get_generator(generator_name_for(task))


def uses_model_tokens(task: Task) -> bool:
    """Whether ``task`` is served by a generator that spends model tokens (False if it names none)."""
    try:
        return generator_name_for(task) in METERED_GENERATORS
    except ConfigError:
        return False
