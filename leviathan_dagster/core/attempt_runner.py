"""Run one attempt from the orchestrator's side: record it, run the executor, make sure it ends.

The worker records its own progress; this side writes ``attempt.created`` before launching and, if
the worker died or hung without a terminal event, the ``attempt.failed`` it could not write. Then it
applies the consequences a single worker cannot see: escalation, attempts exhausted, circuit breaker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from leviathan_dagster.core import attempts as at
from leviathan_dagster.core import lifecycle
from leviathan_dagster.core.attempts import AttemptLedger, AttemptRecord
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.executors.base import AttemptSpec, ExecutionResult, Executor
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import TargetConfig
from leviathan_dagster.core.projections.log_view import current_ledger

ORCHESTRATOR = "leviathan-orchestrator"


@dataclass(frozen=True)
class PlannedAttempt:
    target: TargetConfig
    task_id: str
    attempt_number: int

    @property
    def attempt_id(self) -> str:
        return at.make_attempt_id(self.target.id, self.task_id, self.attempt_number)


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
    finally:
        executor.cleanup(planned.attempt_id)
    ledger = current_ledger(events)
    record = ledger.attempt(planned.attempt_id)
    if record is None or record.in_flight:
        _record_lost_worker(planned, result, events)
        ledger = current_ledger(events)
        record = ledger.attempt(planned.attempt_id)
    assert record is not None
    apply_failure_consequences(record, target, ledger, events)
    return record


def _record_lost_worker(planned: PlannedAttempt, result: ExecutionResult, events: EventStore) -> None:
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
    events.append(
        [
            lifecycle.attempt_failed(
                attempt_id=planned.attempt_id,
                target_id=planned.target.id,
                task_id=planned.task_id,
                failure_type=failure,
                error_summary=summary,
                actor_id=ORCHESTRATOR,
                attempt_number=planned.attempt_number,
            )
        ]
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
    ledger: AttemptLedger, run_is_alive: Callable[[str], bool], events: EventStore
) -> list[AttemptRecord]:
    """Fail attempts whose run ended without a terminal event (run worker killed, pod evicted).

    Without this, such an attempt would stay "running" forever and block its task. The failure is
    ``infrastructure``: it does not count against the task.
    """
    lost = [a for a in ledger.running() if a.run_id and not run_is_alive(a.run_id)]
    if lost:
        events.append(
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
            ]
        )
    return lost
