"""Markdown tables for operators (Dagster metadata, CLI output). Plain text: no secrets, no prompts."""

from __future__ import annotations

from collections.abc import Sequence

from leviathan_dagster.core.models import Backlog
from leviathan_dagster.core.scheduling.readiness import Readiness


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def backlog_table(backlog: Backlog) -> str:
    return markdown_table(
        ["task", "title", "status", "ready", "priority", "executor", "dependencies", "allowed_paths"],
        [
            [
                t.id,
                t.title,
                t.status,
                t.ready,
                t.priority,
                t.generator or t.scope or "",
                ", ".join(t.dependencies),
                ", ".join(t.allowed_paths),
            ]
            for t in backlog.tasks
        ],
    )


def readiness_table(results: Sequence[Readiness]) -> str:
    return markdown_table(
        ["task", "ready", "reason", "detail", "priority", "next attempt"],
        [
            # Blank when no attempt comes (escalated, attempts spent, not pending): the reason says why.
            [r.task_id, "yes" if r.ready else "no", r.reason, r.detail, r.priority, r.next_attempt or ""]
            for r in results
        ],
    )
