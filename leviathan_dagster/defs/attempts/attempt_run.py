"""One attempt inside a Dagster run: the body shared by ``attempt_outcomes`` and the run-now job.

However an attempt is started (the scheduler's run, an operator materializing the task's partition
with ``run_now``, the run-now launchpad job), it goes through the same steps: reconcile lost attempts,
refuse if one is in flight, the run-time re-check (``core.attempt_planning``), then the attempt.
"""

from dataclasses import dataclass, replace

import dagster as dg

from leviathan_dagster.core.attempts import ledger as at
from leviathan_dagster.core.attempts import operator as op_events
from leviathan_dagster.core.attempts.details import attempt_details
from leviathan_dagster.core.attempts.ledger import AttemptRecord, task_key
from leviathan_dagster.core.attempts.runner import (
    DuplicateAttempt,
    execute_attempt,
    plan_next_attempt,
    reconcile_lost_attempts,
    recovery_for,
)
from leviathan_dagster.core.errors import LeviathanError
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.executors.registry import get_executor
from leviathan_dagster.core.failures import retried_inside_run
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.projections.log_view import current_ledger
from leviathan_dagster.core.scheduling.planning import NotAttempted, recheck_before_attempt
from leviathan_dagster.defs.attempts.metadata_entries import cost_entries, link_entries
from leviathan_dagster.defs.attempts.partitions import tasks_partitions
from leviathan_dagster.defs.platform.resources import LeviathanResource
from leviathan_dagster.defs.platform.run_view import DagsterRunView
from leviathan_dagster.defs.platform.runs import process_tags, run_is_alive

# Transient errors only (git remote, lock, disk): a real attempt failure raises Failure(allow_retries=False).
TRANSIENT_RETRY = dg.RetryPolicy(
    max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


@dataclass(frozen=True)
class RunNow:
    """An operator's request to start the attempt now: skips only the wait (the scheduler's tick, a
    retry's backoff); the global limit the scheduler's selection applies is checked here instead."""

    operator: str
    reason: str = ""


def run_attempt(
    context: dg.OpExecutionContext,
    leviathan: LeviathanResource,
    target_id: str,
    task_id: str,
    *,
    executor: str | None = None,
    max_attempts_per_task: int | None = None,
    run_now: RunNow | None = None,
) -> dict[str, object]:
    """Run the task's next attempt in this run; return its materialization metadata.

    Raises ``dg.Failure``: not retried when the attempt was refused or really failed, retried (by the
    step's retry policy) when it failed for infrastructure, which does not count against the task.
    """
    try:
        project = leviathan.project()
        target = leviathan.target(target_id)
    except LeviathanError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    if max_attempts_per_task is not None:
        target = replace(target, policy=replace(target.policy, max_attempts_per_task=max_attempts_per_task))
    events, run_id, key = leviathan.event_log(), context.run.run_id, task_key(target_id, task_id)
    # This run's own process, so another scheduler on this host can tell when it died (run_is_alive).
    context.instance.add_run_tags(run_id, process_tags())
    reconcile_lost_attempts(
        current_ledger(events),
        lambda other: other == run_id or run_is_alive(context.instance, other),
        events,
        recovery_for({t.id: t for t in project.targets}, leviathan.leviathan_home()),
    )
    ledger = current_ledger(events)
    running = ledger.task(target_id, task_id).in_flight()
    if running is not None:
        raise dg.Failure(
            description=f"attempt {running.number} of {key} is still running (run {running.run_id})",
            allow_retries=False,
        )
    global_limit = (project.max_concurrent_attempts, [t.id for t in project.targets]) if run_now else None
    try:
        readiness = recheck_before_attempt(
            target,
            leviathan.leviathan_home(),
            ledger,
            utc_now(),
            DagsterRunView(context.instance),
            task_id=task_id,
            run_id=run_id,
            global_limit=global_limit,
            forgive_streak=run_now is not None,
        )
    except NotAttempted as exc:
        refused = f"{key} cannot run now" if run_now else "not attempted"
        raise dg.Failure(
            description=f"{refused}: {exc.reason}: {exc.detail}",
            metadata={"reason": exc.reason, "detail": exc.detail},
            allow_retries=False,
        ) from exc
    except LeviathanError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    if run_now is not None:
        events.append(
            [
                op_events.operator_event(
                    op_events.RUN_NOW_REQUESTED,
                    run_now.operator,
                    target_id=target.id,
                    task_id=task_id,
                    attempt_number=readiness.next_attempt_number,
                    run_id=run_id,
                    reason=run_now.reason,
                )
            ]
        )
        if key not in context.instance.get_dynamic_partitions(tasks_partitions.name):
            context.instance.add_dynamic_partitions(tasks_partitions.name, [key])
    planned = plan_next_attempt(target, task_id, ledger)
    by = f" (run now by {op_events.operator_actor(run_now.operator)})" if run_now else ""
    context.log.info(f"attempt {planned.attempt_number} ({planned.attempt_id}) of {key}{by}")
    try:
        record = execute_attempt(
            planned,
            leviathan.leviathan_home(),
            leviathan.config_path_resolved(),
            get_executor(executor or target.executor, project),
            events,
            run_id=run_id,
        )
    except DuplicateAttempt as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    except dg.DagsterExecutionInterruptedError as exc:
        # Stopped (Ctrl-C or SIGTERM of `leviathan run`, a terminated run): execute_attempt has recorded
        # the attempt as canceled. Never retried: a retry would start the attempt again after the stop.
        raise dg.Failure(
            description=f"attempt {planned.attempt_number} of {key} canceled: the run was interrupted",
            allow_retries=False,
        ) from exc
    details = attempt_details(events, leviathan.leviathan_home(), record.attempt_id)
    metadata = attempt_metadata(record, details, leviathan.leviathan_home())
    if run_now is not None:
        metadata["requested_by"] = op_events.operator_actor(run_now.operator)
    if record.status != at.SUCCEEDED:
        raise dg.Failure(
            description=f"attempt {record.number} failed ({record.failure_type}): {record.error_summary}",
            metadata=metadata,
            # The failure table says which failures are retried inside the run (infrastructure).
            allow_retries=retried_inside_run(record.failure_type),
        )
    return metadata


def attempt_metadata(
    record: AttemptRecord, details: dict[str, object] | None = None, home: LeviathanHome | None = None
) -> dict[str, object]:
    """What an operator acts on: PR and diff links, branch, commit, attempt number, failure, duration,
    diff stat, touched paths, generator, tokens and USD (``details`` from core/attempts/details.py)."""
    metadata: dict[str, object] = {
        "attempt_id": record.attempt_id,
        "attempt_number": record.number,
        "status": record.status,
        "branch": record.branch_name or "",
        "commit_sha": record.commit_sha or "",
        "failure_type": record.failure_type or "",
        "error_summary": record.error_summary or "",
    }
    if record.started_at and record.completed_at:
        from leviathan_dagster.core.events.model import parse_timestamp

        seconds = (parse_timestamp(record.completed_at) - parse_timestamp(record.started_at)).total_seconds()
        metadata["duration_seconds"] = round(seconds, 3)
    details = dict(details or {})
    # Links (PR, diff) and what the attempt cost: generator, calls, tokens, USD (token counts, never prompts).
    metadata |= link_entries(record, home)
    metadata |= cost_entries(record, details.pop("generator", None))
    details.pop("tokens", None)  # the same figure as total_tokens
    if "touched_paths" in details:
        metadata["touched_paths"] = dg.MetadataValue.md(
            "\n".join(f"- `{p}`" for p in details.pop("touched_paths"))
        )
    return metadata | details
