"""Run one attempt from the orchestrator's side: record it, run the executor, make sure it ends.

The worker records its own progress; this side writes ``attempt.created`` before launching and, if
the worker died or hung without a terminal event, the ``attempt.failed`` it could not write. Then it
applies the consequences a single worker cannot see: escalation, attempts exhausted, circuit breaker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from leviathan_dagster.core.attempts import ledger as at
from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.attempts.ledger import AttemptLedger, AttemptRecord
from leviathan_dagster.core.attempts.recovery import (
    ORCHESTRATOR,
    ForgeUnavailable,
    LostAttempt,
    recorded_usage,
    recover_outcome,
)
from leviathan_dagster.core.errors import ConfigError, ConflictError
from leviathan_dagster.core.events.model import Event, utc_now
from leviathan_dagster.core.events.retry import append_with_retry, read_with_retry
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.executors.base import AttemptSpec, ExecutionResult, Executor
from leviathan_dagster.core.forge.base import Forge
from leviathan_dagster.core.forge.registry import forge_for
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import TargetConfig
from leviathan_dagster.core.projections.log_view import current_ledger


@dataclass(frozen=True)
class PlannedAttempt:
    target: TargetConfig
    task_id: str
    attempt_number: int

    @property
    def attempt_id(self) -> str:
        return at.make_attempt_id(self.target.id, self.task_id, self.attempt_number)


# How the summary of an attempt canceled by a stopping orchestrator begins (``leviathan run`` names it).
CANCELED = "canceled:"


class DuplicateAttempt(Exception):
    """The attempt already exists in the log: another run launched it. Nothing is done twice."""


def plan_next_attempt(target: TargetConfig, task_id: str, ledger: AttemptLedger) -> PlannedAttempt:
    return PlannedAttempt(target, task_id, ledger.task(target.id, task_id).next_number)


def execute_attempt(
    planned: PlannedAttempt,
    home: LeviathanHome,
    config_path: Path,
    executor: Executor,
    events: EventStore,
    *,
    run_id: str | None = None,
) -> AttemptRecord:
    ledger = current_ledger(events)
    if ledger.attempt(planned.attempt_id) is not None:
        raise DuplicateAttempt(
            f"attempt {planned.attempt_id} ({planned.task_id} #{planned.attempt_number}) exists"
        )
    target, task_id = planned.target, planned.task_id
    [created] = events.append(
        [
            lifecycle.attempt_created(
                target_id=target.id,
                task_id=task_id,
                attempt_id=planned.attempt_id,
                attempt_number=planned.attempt_number,
                branch_name=at.branch_name_for(task_id, planned.attempt_id),
                executor=executor.name,
                actor_id=ORCHESTRATOR,
                run_id=run_id,
            )
        ]
    )
    spec = AttemptSpec(
        target,
        task_id,
        planned.attempt_id,
        planned.attempt_number,
        config_path,
        home,
        created_seq=created.seq,
    )
    try:
        result = executor.run(spec)
    except ConfigError as exc:  # the executor cannot run it as configured: retrying would not help
        result = ExecutionResult(None, False, f"executor {executor.name}: {exc}", at.EXECUTOR_ERROR)
    except Exception as exc:  # the executor itself broke: still leave a consistent record
        result = ExecutionResult(None, False, f"executor {executor.name} failed: {type(exc).__name__}: {exc}")
    except BaseException as stop:
        # The orchestrator is being stopped (Ctrl-C or SIGTERM, which Dagster raises in the op as an
        # interrupt; a canceled run): end the worker first, then record what became of the attempt,
        # so nothing stays "running" with nobody left to finish it. Not the task's fault: infrastructure.
        executor.cleanup(planned.attempt_id)
        summary = f"{CANCELED} the orchestrator was stopped ({type(stop).__name__}) while the attempt ran"
        _settle(planned, home, events, ExecutionResult(None, False, summary, at.INFRASTRUCTURE))
        raise
    finally:
        executor.cleanup(planned.attempt_id)
    ledger, record = _settle(planned, home, events, result)
    apply_failure_consequences(record, target, ledger, events)
    return record


def _settle(
    planned: PlannedAttempt, home: LeviathanHome, events: EventStore, result: ExecutionResult
) -> tuple[AttemptLedger, AttemptRecord]:
    """Once the executor is done: the attempt as recorded, recovering from the forge or recording the
    lost worker if it left no terminal event."""
    target, task_id = planned.target, planned.task_id
    # Retried: the database may be restarting just as the worker ends (the worker itself gave up on
    # it); failing here would leave the attempt in flight with its PR unrecorded until the next cycle.
    ledger = read_with_retry(lambda: current_ledger(events))
    record = ledger.attempt(planned.attempt_id)
    if record is None or record.in_flight:
        lost = LostAttempt(target.id, task_id, planned.attempt_id, planned.attempt_number)
        try:
            recovered = recover_outcome(lost, home, _forge_or_none(target, home))
        except ForgeUnavailable as exc:
            recovered, result = [], replace(result, log_tail=f"{result.log_tail}\n{exc}")
        if recovered:
            record_recovered(events, recovered)
        else:
            _record_lost_worker(planned, result, events, home)
        ledger = read_with_retry(lambda: current_ledger(events))
        record = ledger.attempt(planned.attempt_id)
    assert record is not None
    return ledger, record


def _record_lost_worker(
    planned: PlannedAttempt, result: ExecutionResult, events: EventStore, home: LeviathanHome
) -> None:
    if result.failure_type:
        failure, summary = result.failure_type, result.log_tail[:500]
    elif result.timed_out:
        failure, summary = (
            at.TIMEOUT,
            (f"worker killed after attempt_timeout_seconds={planned.target.policy.attempt_timeout_seconds}"),
        )
    else:
        failure, summary = (
            at.INFRASTRUCTURE,
            (f"worker ended (exit {result.exit_code}) without recording a result: {result.log_tail[-500:]}"),
        )
    append_with_retry(
        events,
        [
            lifecycle.attempt_failed(
                attempt_id=planned.attempt_id,
                target_id=planned.target.id,
                task_id=planned.task_id,
                failure_type=failure,
                error_summary=summary,
                actor_id=ORCHESTRATOR,
                attempt_number=planned.attempt_number,
                # What the worker had spent before it died (a timed-out model attempt costs money).
                **recorded_usage(home, planned.attempt_id),
            )
        ],
    )


def apply_failure_consequences(
    record: AttemptRecord, target: TargetConfig, ledger: AttemptLedger, events: EventStore
) -> None:
    """After a failure: a retry (after backoff) while attempts remain, else the task ends as failed;
    escalation and the circuit breaker. Each recorded once as an event (seed 000's lifecycle)."""
    if record.status != at.FAILED:
        return
    policy, history = target.policy, ledger.task(record.target_id, record.task_id)
    follow_ups = []
    if history.counted_attempts < policy.max_attempts_per_task:
        ended = record.ended_at or utc_now()
        follow_ups.append(
            lifecycle.retry_scheduled(
                target_id=target.id,
                task_id=record.task_id,
                retry_number=record.number + 1,
                backoff_seconds=policy.backoff_seconds,
                scheduled_at=ended + timedelta(seconds=policy.backoff_seconds),
                actor_id=ORCHESTRATOR,
            )
        )
    elif not history.completed:
        follow_ups.append(
            lifecycle.task_completed(
                target_id=target.id,
                task_id=record.task_id,
                status="failed",
                actor_id=ORCHESTRATOR,
                reason=f"{history.counted_attempts} attempts used (max_attempts_per_task)",
            )
        )
    if record.counts_against_task:
        failures = history.counted_failures
        if policy.escalation_after and failures >= policy.escalation_after and not history.escalated:
            follow_ups.append(
                lifecycle.task_escalated(
                    target_id=target.id, task_id=record.task_id, failures=failures, actor_id=ORCHESTRATOR
                )
            )
        streak = ledger.target(target.id)
        if streak.consecutive_failures >= policy.circuit_breaker_failures and not streak.circuit_opened:
            follow_ups.append(
                lifecycle.circuit_opened(
                    target_id=target.id,
                    consecutive_failures=streak.consecutive_failures,
                    threshold=policy.circuit_breaker_failures,
                    actor_id=ORCHESTRATOR,
                )
            )
    if follow_ups:
        events.append(follow_ups)


def reconcile_lost_attempts(
    ledger: AttemptLedger,
    run_is_alive: Callable[[str], bool],
    events: EventStore,
    recover: Callable[[AttemptRecord], list[Event]] | None = None,
) -> list[AttemptRecord]:
    """Settle attempts whose run ended without a terminal event (run worker killed, pod evicted).

    ``recover`` (see :func:`recovery_for`) first asks the forge for the attempt's PR and reads its
    result.json: what the worker did but could not record is recorded. Only the rest fail, as
    ``infrastructure`` (not counted against the task); an attempt whose forge cannot be asked now
    waits for the next tick. Without this, such an attempt would stay "running" forever.
    """
    lost: list[AttemptRecord] = []
    for a in ledger.running():
        if not (a.run_id and not run_is_alive(a.run_id)):
            continue
        try:
            recovered = recover(a) if recover is not None else []
        except ForgeUnavailable:
            continue
        if recovered:
            record_recovered(events, recovered)
        else:
            lost.append(a)
    if lost:
        append_with_retry(
            events,
            [
                lifecycle.attempt_failed(
                    attempt_id=a.attempt_id,
                    target_id=a.target_id,
                    task_id=a.task_id,
                    failure_type=at.INFRASTRUCTURE,
                    error_summary=f"run {a.run_id} ended without recording this attempt's result",
                    actor_id=ORCHESTRATOR,
                    attempt_number=a.number,
                )
                for a in lost
            ],
        )
    return lost


def recovery_for(
    targets: Mapping[str, TargetConfig], home: LeviathanHome
) -> Callable[[AttemptRecord], list[Event]]:
    """The ``recover`` of :func:`reconcile_lost_attempts` for these targets (by id)."""

    def recover(record: AttemptRecord) -> list[Event]:
        target = targets.get(record.target_id)
        lost = LostAttempt(
            record.target_id, record.task_id, record.attempt_id, record.number, record.branch_name
        )
        return recover_outcome(lost, home, _forge_or_none(target, home) if target else None)

    return recover


def record_recovered(events: EventStore, recovered: list[Event]) -> None:
    """Append what was recovered; if the worker's own record landed meanwhile (same event ids, other
    content: its timestamps), that record stands and the recovered copy is dropped."""
    with contextlib.suppress(ConflictError):
        append_with_retry(events, recovered)


def _forge_or_none(target: TargetConfig, home: LeviathanHome) -> Forge | None:
    try:
        return forge_for(target, home)
    except ConfigError:  # no credentials here: result.json is all there is to go on
        return None
