"""Operator actions as plain Python: what each one records, and run-now's policy check.

Every action is an event with the operator as ``actor_id`` (``operator:<name>``), so the audit log
answers "who paused this target?" as well as "what did the engine do?". The Dagster jobs in
``defs/operations/`` only supply the identity and call these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from leviathan_dagster.core.attempts.ledger import INFRASTRUCTURE, AttemptLedger, AttemptRecord
from leviathan_dagster.core.attempts.lifecycle import attempt_failed
from leviathan_dagster.core.attempts.runner import ORCHESTRATOR
from leviathan_dagster.core.errors import NotFoundError, PolicyViolation
from leviathan_dagster.core.events import model as ev
from leviathan_dagster.core.events.model import Event
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.models import Backlog, PullRequest, TargetConfig
from leviathan_dagster.core.projections.log_view import current_ledger
from leviathan_dagster.core.scheduling.readiness import Readiness, count_running, evaluate_launched_task

CIRCUIT_RESET = ev.CIRCUIT_RESET
TARGET_PAUSED = ev.TARGET_PAUSED
TARGET_RESUMED = ev.TARGET_RESUMED
RUN_NOW_REQUESTED = ev.RUN_NOW_REQUESTED
CANCEL_REQUESTED = ev.CANCEL_REQUESTED
ESCALATION_CLEARED = ev.TASK_ESCALATION_CLEARED
UNKNOWN_OPERATOR = "unknown"

# What each target action does, for the Dagster op and the CLI command that record it.
TARGET_ACTION_SUMMARIES = {
    CIRCUIT_RESET: "Close a target's circuit breaker so attempts may start again.",
    TARGET_PAUSED: "Stop starting new attempts on a target (running ones finish).",
    TARGET_RESUMED: "Let a paused target start attempts again.",
}


def operator_actor(name: str | None) -> str:
    return f"operator:{(name or '').strip() or UNKNOWN_OPERATOR}"


def operator_event(kind: str, operator: str | None, **payload: object) -> Event:
    return Event.new(kind, dict(payload), actor_id=operator_actor(operator))


def check_run_now(
    target: TargetConfig,
    backlog: Backlog,
    ledger: AttemptLedger,
    open_prs: list[PullRequest] | tuple[PullRequest, ...],
    now: datetime,
    *,
    task_id: str,
    queued_tasks: frozenset[str] = frozenset(),
    max_concurrent: int,
    running_total: int,
) -> Readiness:
    """The task's readiness as if the scheduler looked at it alone, right now.

    Run-now skips only the *wait*: the sensor's next tick and a retry's backoff (seed 002's run-now
    runs a due-later schedule immediately). Every guardrail still holds: status, ready flag, paths,
    dependencies, in-flight attempt, open PR, escalation, attempts used, pause, circuit breaker, PR and
    running limits, and the global limit. Other ready tasks are set aside so that a higher-priority
    task that is *not* being started cannot take the slot this one is judged against.
    """
    task = backlog.get(task_id)
    if task is None:
        known = ", ".join(t.id for t in backlog.tasks) or "none"
        raise NotFoundError(f"target '{target.id}' has no task '{task_id}' in its backlog (tasks: {known})")
    return evaluate_launched_task(
        target,
        backlog,
        ledger,
        open_prs,
        now,
        task_id=task_id,
        queued_tasks=queued_tasks,
        max_concurrent=max_concurrent,
        running_total=running_total,
        forgive_streak=True,
    )


def require_run_now(readiness: Readiness) -> None:
    if not readiness.ready:
        raise PolicyViolation(
            f"{readiness.target_id}/{readiness.task_id} cannot run now: "
            f"{readiness.reason}: {readiness.detail}"
        )


def running_total(ledger: AttemptLedger, target_ids: list[str], queued: dict[str, frozenset[str]]) -> int:
    return sum(count_running(ledger, t, queued.get(t, frozenset())) for t in target_ids)


def attempt_to_cancel(ledger: AttemptLedger, target_id: str, task_id: str) -> AttemptRecord:
    record = ledger.task(target_id, task_id).in_flight()
    if record is None:
        raise NotFoundError(f"{target_id}/{task_id} has no attempt in flight (nothing to cancel)")
    return record


CLEAR_ESCALATION_SUMMARY = (
    "Give an escalated (or out-of-attempts) task a fresh attempt budget, after fixing it on the base branch."
)


def clear_escalation_event(
    target: TargetConfig, ledger: AttemptLedger, task_id: str, operator: str | None, reason: str = ""
) -> Event:
    """The ``task.escalation_cleared`` event that makes a stuck task attemptable again.

    What it resets (the ledger's fold): the escalation; the attempt budget (earlier attempts no longer
    count against ``max_attempts_per_task`` or ``escalation_after``); the infrastructure streak; the
    backoff of the last failed attempt; and the task's recorded end (``task.completed`` failed), so a
    new end is recorded again. What it keeps: the attempts themselves (history, artifacts, PRs) and
    their numbering (the next attempt is the next number, so ids and branches never repeat), the
    target's circuit breaker and pause (``target reset-breaker``/``resume``), and every other rule of
    readiness. Refused while an attempt is in flight, and for a task with nothing to clear.
    """
    history = ledger.task(target.id, task_id)
    running = history.in_flight()
    if running is not None:
        raise PolicyViolation(
            f"{target.id}/{task_id}: attempt {running.number} ({running.attempt_id}) is {running.status}; "
            "wait for it to end or cancel it (cancel_attempt_job) first"
        )
    if history.escalated:
        cleared = "escalated"
    elif history.counted_attempts >= target.policy.max_attempts_per_task:
        cleared = "attempts_exhausted"
    else:
        raise NotFoundError(
            f"{target.id}/{task_id} is neither escalated nor out of attempts "
            f"({history.counted_attempts} of {target.policy.max_attempts_per_task} used): nothing to clear"
        )
    return operator_event(
        ESCALATION_CLEARED,
        operator,
        target_id=target.id,
        task_id=task_id,
        cleared=cleared,
        attempts_before=len(history.attempts),
        reason=reason,
    )


@dataclass(frozen=True)
class CancelOutcome:
    attempt_id: str
    run_id: str | None
    terminated: bool
    summary: str


def cancel_attempt(
    events: EventStore,
    target: TargetConfig,
    task_id: str,
    operator: str | None,
    *,
    reason: str = "",
    pause_target: bool = False,
    terminate_run: Callable[[str], bool],
    cleanup: Callable[[str], None],
) -> CancelOutcome:
    """Cancel the task's attempt in flight: record the request, stop its run (``terminate_run``, the
    orchestrator's part) and whatever it launched outside the run (``cleanup``: a pod, a worker), then
    end it as an infrastructure failure (not counted against the task), and pause the target if asked.

    NotFoundError when nothing is in flight. The request is recorded first, so the audit log shows who
    asked even if stopping the run fails.
    """
    record = attempt_to_cancel(current_ledger(events), target.id, task_id)
    actor = operator_actor(operator)
    ids = {"attempt_id": record.attempt_id, "target_id": target.id, "task_id": task_id}
    events.append([operator_event(CANCEL_REQUESTED, operator, **ids, reason=reason)])
    terminated = terminate_run(record.run_id) if record.run_id else False
    cleanup(record.attempt_id)
    summary = f"canceled by {actor}" + (f": {reason}" if reason else "")
    follow_ups = [
        attempt_failed(
            failure_type=INFRASTRUCTURE,
            error_summary=summary,
            actor_id=ORCHESTRATOR,
            attempt_number=record.number,
            canceled_by=actor,
            **ids,
        )
    ]
    if pause_target:
        follow_ups.append(operator_event(TARGET_PAUSED, operator, target_id=target.id, reason=summary))
    events.append(follow_ups)
    return CancelOutcome(record.attempt_id, record.run_id, terminated, summary)
