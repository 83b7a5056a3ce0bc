"""Generators by name, and which one serves a task. A dict from name to class is the whole plugin system."""

from __future__ import annotations

import difflib
import importlib

from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.generators.base import Generator, TaskProblem
from leviathan_dagster.core.models import Task

# Name -> "module:class", imported when a generator is made: a worker running a docs task never loads
# the Claude generator's modules (its SDK, templates and prompts), and neither does the scheduler,
# which only needs the names to judge readiness.
GENERATORS: dict[str, str] = {
    "docs": "leviathan_dagster.core.generators.docs:DocsGenerator",
    "tests": "leviathan_dagster.core.generators.tests:TestsGenerator",
    "claude": "leviathan_dagster.core.generators.claude.generator:ClaudeGenerator",
}
# Generators that spend model tokens: their tasks are held back by a target's daily_token_budget.
METERED_GENERATORS = frozenset({"claude"})


def _available() -> str:
    return ", ".join(sorted(GENERATORS))


def _generator_class(name: str) -> type[Generator]:
    where = GENERATORS.get(name)
    if where is None:
        raise ConfigError(f"generator {name!r} is unknown (available: {_available()})")
    module, _, class_name = where.partition(":")
    return getattr(importlib.import_module(module), class_name)


def get_generator(name: str) -> Generator:
    """A new generator named ``name``; ConfigError listing the available names when there is none."""
    return _generator_class(name)()


def _task_label(task: Task) -> str:
    return f"task {task.id!r}" + (f" (backlog line {task.line})" if task.line else "")


def generator_name_for(task: Task) -> str:
    """The generator that serves ``task``: its ``generator`` if set, else its ``scope`` if that names one."""
    if task.generator:
        if task.generator not in GENERATORS:
            raise ConfigError(
                f"{_task_label(task)}: generator {task.generator!r} is unknown (available: {_available()})"
            )
        return task.generator
    if task.scope in GENERATORS:
        return task.scope
    scope_note = f" and its scope {task.scope!r} names no generator" if task.scope else ""
    raise ConfigError(
        f"{_task_label(task)} has no generator{scope_note}; "
        "set `generator: docs`, `generator: tests` or `generator: claude` on the task"
    )


def check_task_generator(task: Task) -> list[TaskProblem]:
    """Why no attempt of ``task`` could succeed with its generator: unknown or missing (only for a task
    that is ready: a draft may leave it for later), or the generator's own ``check_task``."""
    if task.generator and task.generator not in GENERATORS:
        close = difflib.get_close_matches(task.generator, GENERATORS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return [
            TaskProblem(
                "generator",
                f"names unknown generator {task.generator!r}{hint}; available: {_available()}",
                f"write e.g. 'generator: {close[0] if close else 'docs'}'",
            )
        ]
    name = task.generator or (task.scope if task.scope in GENERATORS else None)
    if name is None:
        if not task.ready or task.status != "pending":
            return []
        scope_note = f" (its scope {task.scope!r} names none)" if task.scope else ""
        return [
            TaskProblem(
                "generator",
                f"is missing{scope_note}: a ready task needs a generator to write its change",
                f"add 'generator: docs' (or {_available()})",
            )
        ]
    return _generator_class(name).check_task(task)


def generator_for(task: Task) -> Generator:
    """The generator instance that serves ``task`` (see ``generator_name_for``)."""
    return get_generator(generator_name_for(task))


def uses_model_tokens(task: Task) -> bool:
    """Whether ``task`` is served by a generator that spends model tokens (False if it names none)."""
    try:
        return generator_name_for(task) in METERED_GENERATORS
    except ConfigError:
        return False
