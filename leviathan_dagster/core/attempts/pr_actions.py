"""What a reviewer does to a Leviathan PR, with its consequences recorded in the event log.

Merging completes the task (``pr.merged`` then ``task.completed``): the backlog write-back inside the
PR lands on the base branch with it, so the task's dependents become ready in the next cycle. Closing
without merge fails the attempt that opened the PR (``pr_closed``), which counts like any failure:
a retry after backoff or the task ends failed, escalation, the circuit breaker. Both are recorded
exactly as the PR sensor records an ending it notices on the forge.
"""

from __future__ import annotations

from leviathan_dagster.core.attempts.pr_lifecycle import record_ending
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.forge.base import Forge
from leviathan_dagster.core.models import PullRequest, TargetConfig

REVIEWER = "leviathan-cli"


def merge_pull_request(
    target: TargetConfig, forge: Forge, number: int, events: EventStore, *, actor_id: str = REVIEWER
) -> PullRequest:
    pr = forge.merge_pull_request(number)
    record_ending(target, pr, events, actor_id=actor_id)
    return pr


def close_pull_request(
    target: TargetConfig, forge: Forge, number: int, events: EventStore, *, actor_id: str = REVIEWER
) -> PullRequest:
    pr = forge.close_pull_request(number)
    record_ending(target, pr, events, actor_id=actor_id)
    return pr
