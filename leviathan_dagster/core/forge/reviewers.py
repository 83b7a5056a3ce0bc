"""Who reviews a task's PR: the backlog's optional ``owner`` field (a login, ``@login``, an
``org/team`` slug, or a list of those). Unknown keys of a task live in ``Task.extra``."""

from __future__ import annotations

import re

from leviathan_dagster.core.models import Task

_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:/[A-Za-z0-9._-]+)?$")


def reviewers_from_task(task: Task) -> tuple[str, ...]:
    """Valid reviewer names from ``owner``, in order, without duplicates; anything else is ignored."""
    owner = task.extra.get("owner")
    names = owner if isinstance(owner, list) else [owner]
    found: list[str] = []
    for name in names:
        if isinstance(name, str):
            name = name.strip().removeprefix("@")
            if _NAME_RE.match(name) and name not in found:
                found.append(name)
    return tuple(found)
