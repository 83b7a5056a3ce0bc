"""Where a task stands after its attempts, in one word and a reason: what its partition shows.

A task's Dagster partition (``attempt_outcomes``) is green when its last attempt opened a PR and red
when it failed, but a failure can come after the run that made it green (the PR was closed unmerged),
and "failed" alone does not say whether a retry comes, a human is needed, or the attempts are spent.
This module says it, from the ledger only, for the attempt run, the PR lifecycle sensor and the docs:

- ``failed``: the newest attempt of the task's budget failed (any type in ``core/failures.py``,
  ``pr_closed`` included); a retry follows after the backoff;
- ``escalated``: failed, and ``escalation_after`` failures asked for a human;
- ``attempts_exhausted``: failed, and ``max_attempts_per_task`` attempts are spent;
- ``pr_open`` / ``merged``: the newest attempt opened a PR, still open or merged;
- ``escalation_cleared``: an operator cleared the escalation (a fresh budget), no attempt since;
- ``running``: an attempt is in flight; ``none``: never attempted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from leviathan_dagster.core import failures
from leviathan_dagster.core.attempts.ledger import FAILED, PR_CLOSED, SUCCEEDED, AttemptLedger, AttemptRecord
from leviathan_dagster.core.events import model as ev
from leviathan_dagster.core.events.model import StoredEvent
from leviathan_dagster.core.models import Policy

FAILED_STATE, ESCALATED, EXHAUSTED = "failed", "escalated", "attempts_exhausted"
PR_OPEN, MERGED, CLEARED, RUNNING, NONE = "pr_open", "merged", "escalation_cleared", "running", "none"
FAILED_STATES = (FAILED_STATE, ESCALATED, EXHAUSTED)


@dataclass(frozen=True)
class TaskOutcome:
    target_id: str
    task_id: str
    state: str
    reason: str
    attempt: AttemptRecord | None = None

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    @property
    def failure_type(self) -> str:
        return (self.attempt.failure_type or "") if self.failed and self.attempt else ""

    def as_metadata(self) -> dict[str, str | int]:
        """Plain values for the partition's metadata: outcome, failure type, what it means, reason."""
        metadata: dict[str, str | int] = {"outcome": self.state, "outcome_reason": self.reason}
        if self.attempt is not None:
            metadata["attempt_number"] = self.attempt.number
            metadata["attempt_id"] = self.attempt.attempt_id
        if self.failed:
            row = failures.BY_NAME.get(self.failure_type)
            metadata["failure_type"] = self.failure_type
            metadata["failure_meaning"] = row.meaning if row else "unknown failure type"
            metadata["error_summary"] = (self.attempt.error_summary or "") if self.attempt else ""
        return metadata


def task_outcome(ledger: AttemptLedger, policy: Policy, target_id: str, task_id: str) -> TaskOutcome:
    """The task's outcome as the log has it now (see the module docstring for the states)."""
    history = ledger.task(target_id, task_id)

    def outcome(state: str, reason: str, attempt: AttemptRecord | None = None) -> TaskOutcome:
        return TaskOutcome(target_id, task_id, state, reason, attempt)

    running = history.in_flight()
    if running is not None:
        return outcome(RUNNING, f"attempt {running.number} is {running.status}", running)
    last = history.last
    if last is None:
        if history.attempts:  # every attempt is before the last task.escalation_cleared
            return outcome(
                CLEARED,
                f"escalation cleared after attempt {history.attempts[-1].number}: attempt "
                f"{history.next_number} runs with a fresh budget",
                history.attempts[-1],
            )
        return outcome(NONE, "not attempted yet")
    if last.status == SUCCEEDED:
        if last.pr_number is not None and (target_id, last.pr_number) in ledger.finished_prs:
            return outcome(MERGED, f"PR #{last.pr_number} merged", last)
        return outcome(PR_OPEN, f"PR #{last.pr_number} is open for review", last)
    if last.status != FAILED:
        return outcome(RUNNING, f"attempt {last.number} is {last.status}", last)
    failed = f"attempt {last.number} failed ({last.failure_type})"
    clear = f"`leviathan task clear-escalation {target_id} {task_id}` (or clear_escalation_job)"
    if history.escalated:
        return outcome(
            ESCALATED,
            f"{failed}; escalated after {history.counted_failures} failed attempts: fix the task, then "
            f"{clear}",
            last,
        )
    if history.counted_attempts >= policy.max_attempts_per_task:
        return outcome(
            EXHAUSTED,
            f"{failed}; {history.counted_attempts} of {policy.max_attempts_per_task} attempts used "
            f"(max_attempts_per_task): {clear} gives it a fresh budget",
            last,
        )
    if not last.counts_against_task:
        return outcome(FAILED_STATE, f"{failed}; not counted against the task, retried", last)
    return outcome(
        FAILED_STATE, f"{failed}; retried after backoff_seconds ({policy.backoff_seconds} s)", last
    )


def outcome_version(outcome: TaskOutcome) -> str:
    """What changes exactly when the partition's shown outcome does."""
    number = outcome.attempt.number if outcome.attempt else 0
    return f"{outcome.state}:{number}:{outcome.failure_type}"


# The events after which a task's outcome may differ from what its partition shows. An attempt's own
# end is not one of them: the attempt's run records that outcome itself (materialized or failed).
_CHANGING = (ev.PR_CLOSED, ev.PR_MERGED, ev.TASK_ESCALATED, ev.TASK_ESCALATION_CLEARED)


@dataclass(frozen=True)
class OutcomeUpdate:
    """What the partition needs: ``needs_failed_run`` when it shows green (its attempt's run
    succeeded) but the task failed since (``pr_closed``): in Dagster OSS only a failed run turns a
    partition red. Otherwise the new outcome is reported on the partition as it stands."""

    outcome: TaskOutcome
    needs_failed_run: bool


def touched_tasks(ledger: AttemptLedger, events: Iterable[StoredEvent]) -> set[tuple[str, str]]:
    """(target, task) of every event in ``events`` that may change a task's shown outcome."""
    touched: set[tuple[str, str]] = set()
    for stored in events:
        kind, payload = stored.event_type, stored.payload
        if kind not in _CHANGING:
            continue
        if kind in (ev.PR_CLOSED, ev.PR_MERGED):
            attempt = ledger.attempt(payload.get("attempt_id") or "")
            marker = payload.get("task") or ""
            if attempt is not None:
                touched.add((attempt.target_id, attempt.task_id))
            elif "/" in marker:
                target_id, task_id = marker.split("/", 1)
                touched.add((target_id, task_id))
        elif payload.get("target_id") and payload.get("task_id"):
            touched.add((payload["target_id"], payload["task_id"]))
    return touched


def tasks_shown_wrong(ledger: AttemptLedger) -> set[tuple[str, str]]:
    """Tasks whose partition may show what is no longer true, found in the ledger alone: for a first
    look (no cursor yet) at a log whose PR closes or cleared escalations happened unobserved."""
    return {
        (a.target_id, a.task_id)
        for a in ledger.attempts()
        if a.failure_type == PR_CLOSED or ledger.task(a.target_id, a.task_id).budget_start
    }


def outcome_updates(
    ledger: AttemptLedger, policies: Mapping[str, Policy], tasks: Iterable[tuple[str, str]]
) -> list[OutcomeUpdate]:
    """The update each of ``tasks`` needs (targets without a policy here are not Leviathan's now)."""
    updates = []
    for target_id, task_id in sorted(tasks):
        if target_id not in policies:
            continue
        outcome = task_outcome(ledger, policies[target_id], target_id, task_id)
        if outcome.state == RUNNING:
            continue  # that attempt's own run records what comes of it
        updates.append(OutcomeUpdate(outcome, outcome.failed and outcome.failure_type == PR_CLOSED))
    return updates
