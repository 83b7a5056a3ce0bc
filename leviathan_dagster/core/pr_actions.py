"""What a reviewer does to a Leviathan PR, with its consequences recorded in the event log.

Merging completes the task (``pr.merged`` then ``task.completed``): the backlog write-back inside the
PR lands on the base branch with it, so the task's dependents become ready in the next cycle.
"""

from __future__ import annotations

from leviathan_dagster.core import lifecycle
from leviathan_dagster.core.events import model as ev
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.forge.base import Forge
from leviathan_dagster.core.models import PullRequest

REVIEWER = "leviathan-cli"


def merge_pull_request(
    forge: Forge, number: int, events: EventStore, *, actor_id: str = REVIEWER
) -> PullRequest:
    pr = forge.merge_pull_request(number)
    marker = pr.task_marker()
    records = [
        lifecycle.pr_finished(
            kind=ev.PR_MERGED,
            target_id=forge.target_id,
            pr_number=pr.number,
            task_ref=marker,
            actor_id=actor_id,
            merge_commit_sha=pr.merge_commit_sha,
            merged_at=pr.merged_at,
        )
    ]
    if marker:
        _, task_id = marker.split("/", 1)
        records.append(
            lifecycle.task_completed(
                target_id=forge.target_id,
                task_id=task_id,
                status="completed",
                actor_id=actor_id,
                pr_number=pr.number,
            )
        )
    events.append(records)
    return pr


def close_pull_request(
    forge: Forge, number: int, events: EventStore, *, actor_id: str = REVIEWER
) -> PullRequest:
    pr = forge.close_pull_request(number)
    events.append(
        [
            lifecycle.pr_finished(
                kind=ev.PR_CLOSED,
                target_id=forge.target_id,
                pr_number=pr.number,
                task_ref=pr.task_marker(),
                actor_id=actor_id,
                closed_at=pr.closed_at,
            )
        ]
    )
    return pr
