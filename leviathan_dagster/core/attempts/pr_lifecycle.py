"""Notice what reviewers did to Leviathan's PRs on the forge, and record it.

A PR merged or closed outside Leviathan (on GitHub, or ``prs merge`` from another machine) is found by
polling the forge for every PR an attempt opened and the log has not yet seen finish:

- merged: ``pr.merged`` and ``task.completed``;
- closed without merge: ``pr.closed``; the ledger turns the attempt into a ``pr_closed`` failure, which
  counts against ``max_attempts_per_task`` and the circuit breaker, and the usual consequences follow
  (retry after backoff, or the task ends failed; escalation; the breaker).

``core/pr_actions`` records a reviewer's merge or close from the CLI the same way (``record_ending``).
Event timestamps are the forge's merge/close times, so recording the same ending twice writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.attempts.runner import apply_failure_consequences
from leviathan_dagster.core.errors import NotFoundError
from leviathan_dagster.core.events import model as ev
from leviathan_dagster.core.events.model import parse_timestamp
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.forge.base import Forge
from leviathan_dagster.core.models import PullRequest, TargetConfig
from leviathan_dagster.core.projections.log_view import current_ledger

PR_SENSOR = "leviathan-pr-sensor"


@dataclass
class SyncResult:
    merged: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    still_open: list[int] = field(default_factory=list)
    ready_for_review: list[int] = field(default_factory=list)


def sync_pull_requests(
    target: TargetConfig, forge: Forge, events: EventStore, *, actor_id: str = PR_SENSOR
) -> SyncResult:
    """Record the endings of ``target``'s Leviathan PRs that the log does not know yet."""
    result = SyncResult(ready_for_review=[pr.number for pr in forge.ready_green_drafts()])
    ledger = current_ledger(events)
    watched = sorted(
        {(a.pr_number, a.attempt_id) for a in ledger.open_pr_attempts(target.id) if a.pr_number is not None}
    )
    for number, attempt_id in watched:
        try:
            pr = forge.get_pull_request(number)
        except NotFoundError:
            continue  # deleted or never visible to this credential: nothing to record
        if pr.state == "open":
            result.still_open.append(number)
            continue
        record_ending(target, pr, events, actor_id=actor_id, attempt_id=attempt_id)
        (result.merged if pr.state == "merged" else result.closed).append(number)
    return result


def record_ending(
    target: TargetConfig,
    pr: PullRequest,
    events: EventStore,
    *,
    actor_id: str,
    attempt_id: str | None = None,
) -> None:
    """Record that ``pr`` (merged or closed) ended, with what follows from it: a merge completes the
    task; a close without merge fails the attempt that opened it, with that failure's consequences.
    ``attempt_id`` defaults to the attempt the ledger says opened the PR."""
    if attempt_id is None:
        opened = current_ledger(events).attempts_with_pr(target.id, pr.number)
        attempt_id = opened[-1].attempt_id if opened else None
    events.append(_ending(target, pr, attempt_id, actor_id))
    if pr.state == "closed" and attempt_id is not None:
        ledger = current_ledger(events)
        record = ledger.attempt(attempt_id)
        if record is not None:
            apply_failure_consequences(record, target, ledger, events)


def _ending(target: TargetConfig, pr: PullRequest, attempt_id: str | None, actor_id: str) -> list[ev.Event]:
    marker = pr.task_marker()
    # Which attempt opened the PR, when known (a PR the ledger never saw opened has none).
    opened_by = {"attempt_id": attempt_id} if attempt_id else {}
    if pr.state == "merged":
        at = parse_timestamp(pr.merged_at) if pr.merged_at else None
        records = [
            lifecycle.pr_finished(
                kind=ev.PR_MERGED,
                target_id=target.id,
                pr_number=pr.number,
                task_ref=marker,
                actor_id=actor_id,
                at=at,
                **opened_by,
                merge_commit_sha=pr.merge_commit_sha,
                merged_at=pr.merged_at,
            )
        ]
        if marker:
            records.append(
                lifecycle.task_completed(
                    target_id=target.id,
                    task_id=marker.split("/", 1)[1],
                    status="completed",
                    actor_id=actor_id,
                    at=at,
                    pr_number=pr.number,
                )
            )
        return records
    at = parse_timestamp(pr.closed_at) if pr.closed_at else None
    return [
        lifecycle.pr_finished(
            kind=ev.PR_CLOSED,
            target_id=target.id,
            pr_number=pr.number,
            task_ref=marker,
            actor_id=actor_id,
            at=at,
            **opened_by,
            closed_at=pr.closed_at,
        )
    ]
