"""What the backlog and task_readiness assets show, built once for both ways they are recorded: the
scheduling sensor reports them as asset events (no run), and the on-demand refresh job materializes
them. Either way the readiness shown is the one the scheduler's plan computed (``plan_cycle``)."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dagster as dg

from leviathan_dagster.core.attempts.path_policy import task_paths_in_scope
from leviathan_dagster.core.events.model import format_timestamp
from leviathan_dagster.core.models import Backlog, TargetConfig
from leviathan_dagster.core.reporting import backlog_table, markdown_table, readiness_table
from leviathan_dagster.core.scheduling.cycle import TargetSnapshot

BACKLOG_VALID = "backlog_is_valid"
PATHS_IN_SCOPE = "allowed_paths_in_scope"


@dataclass(frozen=True)
class CheckOutcome:
    """One asset check's verdict (an ``AssetCheckResult`` of the backlog asset's run)."""

    check_name: str
    passed: bool
    severity: dg.AssetCheckSeverity
    description: str | None
    metadata: dict[str, Any]

    def result(self) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            check_name=self.check_name,
            passed=self.passed,
            severity=self.severity,
            description=self.description,
            metadata=self.metadata,
        )


def backlog_version(backlog: Backlog | None, error: str | None) -> str:
    """A digest of what was read from the base branch: it changes exactly when the backlog's content
    (or the reason it could not be read) does, so unchanged ticks record nothing."""
    return hashlib.sha256(repr((backlog, None if backlog else error)).encode()).hexdigest()[:16]


def readiness_version(snap: TargetSnapshot) -> str:
    """A digest of every task's verdict and reason (not the detail text, which carries countdowns)."""
    rows = [(r.task_id, r.ready, r.reason, r.next_attempt_number) for r in snap.readiness]
    return hashlib.sha256(repr((rows, len(snap.open_prs), snap.error)).encode()).hexdigest()[:16]


def backlog_metadata(
    target: TargetConfig, backlog: Backlog | None, error: str | None, archived: list[str] | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "repo_url": target.repo_url,
        "branch": target.branch,
        "valid": backlog is not None,
        # What backlog_sensor compares: a backlog already recorded at this version is not re-recorded.
        "version": backlog_version(backlog, None if backlog else error),
    }
    if backlog is not None:
        statuses = Counter(t.status for t in backlog.tasks)
        metadata |= {
            "tasks": len(backlog.tasks),
            "statuses": dg.MetadataValue.json(dict(sorted(statuses.items()))),
            "task_table": dg.MetadataValue.md(backlog_table(backlog)),
            "warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in backlog.warnings) or "none"),
        }
    else:
        metadata["errors"] = dg.MetadataValue.md(f"```\n{error}\n```")
    if archived is not None:
        # Tasks that left the backlog but had attempts: their partitions stay, so their history does.
        metadata["archived_tasks"] = dg.MetadataValue.md(
            "\n".join(f"- `{key}`" for key in sorted(archived)) or "none"
        )
    return metadata


def backlog_checks(target: TargetConfig, backlog: Backlog | None, error: str | None) -> list[CheckOutcome]:
    valid = CheckOutcome(
        BACKLOG_VALID,
        backlog is not None,
        dg.AssetCheckSeverity.ERROR,
        None,
        {"error": "" if backlog is not None else (error or "")},
    )
    return [valid, paths_in_scope(target, backlog)]


def paths_in_scope(target: TargetConfig, backlog: Backlog | None) -> CheckOutcome:
    """Tasks whose allowed_paths leave the target's prefixes never run (readiness says
    ``out_of_scope``); the check makes that visible on the backlog itself, with the fix."""
    if backlog is None:
        return CheckOutcome(
            PATHS_IN_SCOPE, False, dg.AssetCheckSeverity.ERROR, "the backlog is invalid: nothing to check", {}
        )
    prefixes = target.policy.allowed_path_prefixes
    outside = {t.id: task_paths_in_scope(t.allowed_paths, prefixes) for t in backlog.tasks}
    rows = [[task, ", ".join(paths)] for task, paths in outside.items() if paths]
    return CheckOutcome(
        PATHS_IN_SCOPE,
        not rows,
        dg.AssetCheckSeverity.WARN,
        (
            f"{len(rows)} tasks have allowed_paths outside {', '.join(prefixes)}: narrow the task's paths "
            "or widen policy.allowed_path_prefixes"
            if rows
            else "all tasks in scope"
        ),
        {"outside": dg.MetadataValue.md(markdown_table(["task", "paths outside"], rows) if rows else "none")},
    )


def readiness_metadata(
    snap: TargetSnapshot, selected: list[str], decided_at: datetime | None, decision: str
) -> dict[str, Any]:
    """``selected``: the tasks the plan requested attempt runs for in this decision; ``decided_at``
    the clock readiness was judged at and ``decision`` what was done with it (the sensor's words)."""
    reasons = Counter(r.reason for r in snap.readiness)
    return {
        "decided_at": format_timestamp(decided_at) if decided_at else "",
        "decision": decision,
        "version": readiness_version(snap),
        "ready": sum(1 for r in snap.readiness if r.ready),
        "not_ready": sum(1 for r in snap.readiness if not r.ready),
        "open_prs": len(snap.open_prs),
        "requested": dg.MetadataValue.json(selected),
        "reasons": dg.MetadataValue.json(dict(sorted(reasons.items()))),
        "readiness_table": dg.MetadataValue.md(readiness_table(snap.readiness)),
    }


def decision_summary(snap: TargetSnapshot, selected: list[str], requester: str) -> str:
    """One line: which attempts ``requester`` asked for, or why none (the waiting reasons)."""
    if selected:
        numbers = {r.task_id: r.next_attempt_number for r in snap.readiness}
        runs = ", ".join(f"{task} (attempt {numbers[task]})" for task in selected)
        return f"{requester} requested attempt runs for {runs}"
    waiting = Counter(r.reason for r in snap.readiness if not r.ready)
    why = ", ".join(f"{count} {reason}" for reason, count in sorted(waiting.items())) or "no tasks"
    return f"{requester} requested nothing: {why}"
