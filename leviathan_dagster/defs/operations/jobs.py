"""Operator actions, launched from the Dagster launchpad: each one is recorded in the event log with
the operator's identity (``operator:<name>``), and none of them can step outside policy."""

import dagster as dg

from leviathan_dagster.core import attempts as at
from leviathan_dagster.core import operator as op_events
from leviathan_dagster.core.attempt_details import attempt_details
from leviathan_dagster.core.attempt_runner import ORCHESTRATOR, PlannedAttempt, execute_attempt
from leviathan_dagster.core.attempts import task_key
from leviathan_dagster.core.errors import LeviathanError
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.executors.registry import get_executor
from leviathan_dagster.core.lifecycle import attempt_failed
from leviathan_dagster.core.projections.log_view import current_ledger
from leviathan_dagster.core.scheduling import snapshot_target
from leviathan_dagster.defs.attempts.assets import attempt_metadata, attempt_outcomes
from leviathan_dagster.defs.attempts.jobs import ATTEMPT_JOB
from leviathan_dagster.defs.attempts.partitions import tasks_partitions
from leviathan_dagster.defs.operations.config import (
    CancelAttemptConfig,
    OperatorConfig,
    RunTaskNowConfig,
    TargetActionConfig,
    operator_name,
)
from leviathan_dagster.defs.platform.resources import LeviathanResource
from leviathan_dagster.defs.platform.runs import queued_tasks_by_target, run_is_alive

OPS_TAGS = {"leviathan/kind": "operator-action"}


def _fail(exc: LeviathanError) -> dg.Failure:
    return dg.Failure(description=str(exc), allow_retries=False)


@dg.op(
    tags=OPS_TAGS, description="Start one attempt at a task now, if policy allows it (see run_task_now_job)."
)
def run_task_now(context: dg.OpExecutionContext, config: RunTaskNowConfig, leviathan: LeviathanResource):
    try:
        project = leviathan.project()
        target = leviathan.target(config.target)
        events = leviathan.event_log()
        ledger = current_ledger(events)
        snap = snapshot_target(target, leviathan.leviathan_home(), ledger, utc_now())
        if not snap.ok:
            raise dg.Failure(description=f"target '{target.id}': {snap.error}", allow_retries=False)
        queued = queued_tasks_by_target(context.instance, ATTEMPT_JOB, ledger, exclude_run=context.run.run_id)
        readiness = op_events.check_run_now(
            target,
            snap.backlog,
            ledger,
            snap.open_prs,
            utc_now(),
            task_id=config.task,
            queued_tasks=queued.get(target.id, frozenset()),
            max_concurrent=project.max_concurrent_attempts,
            running_total=op_events.running_total(ledger, [t.id for t in project.targets], queued),
        )
        op_events.require_run_now(readiness)
    except LeviathanError as exc:
        raise _fail(exc) from exc
    operator = operator_name(context, config)
    key = task_key(target.id, config.task)
    events.append(
        [
            op_events.operator_event(
                op_events.RUN_NOW_REQUESTED,
                operator,
                target_id=target.id,
                task_id=config.task,
                attempt_number=readiness.next_attempt_number,
                run_id=context.run.run_id,
                reason=config.reason,
            )
        ]
    )
    if key not in context.instance.get_dynamic_partitions(tasks_partitions.name):
        context.instance.add_dynamic_partitions(tasks_partitions.name, [key])
    planned = PlannedAttempt(target, config.task, readiness.next_attempt_number)
    context.log.info(
        f"run now: attempt {planned.attempt_number} ({planned.attempt_id}) of {key} by {operator}"
    )
    record = execute_attempt(
        planned,
        leviathan.leviathan_home(),
        leviathan.config_path_resolved(),
        get_executor(config.executor or target.executor),
        events,
        run_id=context.run.run_id,
    )
    details = attempt_details(events, leviathan.leviathan_home(), record.attempt_id)
    metadata = attempt_metadata(record, details) | {"requested_by": op_events.operator_actor(operator)}
    if record.status != at.SUCCEEDED:
        raise dg.Failure(
            description=f"attempt {record.number} failed ({record.failure_type}): {record.error_summary}",
            metadata=metadata,
            allow_retries=False,
        )
    # The attempt is the task partition's materialization, exactly as if attempt_job had run it: the
    # partition view shows every attempt, however it was started.
    context.log_event(
        dg.AssetMaterialization(asset_key=attempt_outcomes.key, partition=key, metadata=metadata)
    )


@dg.op(tags=OPS_TAGS, description="Cancel a task's running attempt: terminate its run and what it launched.")
def cancel_attempt(context: dg.OpExecutionContext, config: CancelAttemptConfig, leviathan: LeviathanResource):
    try:
        target = leviathan.target(config.target)
        events = leviathan.event_log()
        record = op_events.attempt_to_cancel(current_ledger(events), config.target, config.task)
    except LeviathanError as exc:
        raise _fail(exc) from exc
    operator = operator_name(context, config)
    actor = op_events.operator_actor(operator)
    ids = {"attempt_id": record.attempt_id, "target_id": target.id, "task_id": config.task}
    events.append(
        [op_events.operator_event(op_events.CANCEL_REQUESTED, operator, **ids, reason=config.reason)]
    )
    terminated = False
    if record.run_id and run_is_alive(context.instance, record.run_id):
        # The run coordinator cancels a queued run directly and asks the run launcher to terminate a
        # started one; the run's own interrupt then runs the executor's cleanup (kills the worker).
        run = context.instance.get_run_by_id(record.run_id)
        if run is not None and run.status == dg.DagsterRunStatus.NOT_STARTED:
            # Created but never handed to a launcher: nothing runs, so there is nothing to interrupt.
            context.instance.report_run_canceled(run, message=f"canceled by {actor}")
            terminated = True
        else:
            terminated = context.instance.run_coordinator.cancel_run(record.run_id)
    # Whatever the attempt launched outside the run (a pod, a worker process) goes too.
    get_executor(target.executor).cleanup(record.attempt_id)
    summary = f"canceled by {actor}" + (f": {config.reason}" if config.reason else "")
    follow_ups = [
        attempt_failed(
            failure_type=at.INFRASTRUCTURE,
            error_summary=summary,
            actor_id=ORCHESTRATOR,
            attempt_number=record.number,
            canceled_by=actor,
            **ids,
        )
    ]
    if config.pause_target:
        follow_ups.append(
            op_events.operator_event(op_events.TARGET_PAUSED, operator, target_id=target.id, reason=summary)
        )
    events.append(follow_ups)
    context.log.info(f"attempt {record.attempt_id}: {summary} (run {record.run_id} terminated: {terminated})")


def _target_event(
    kind: str, context: dg.OpExecutionContext, config: OperatorConfig, target_id: str, leviathan
):
    try:
        target = leviathan.target(target_id)
    except LeviathanError as exc:
        raise _fail(exc) from exc
    operator = operator_name(context, config)
    leviathan.event_log().append(
        [op_events.operator_event(kind, operator, target_id=target.id, reason=config.reason)]
    )
    context.log.info(f"{kind} for target '{target.id}' by {op_events.operator_actor(operator)}")


@dg.op(tags=OPS_TAGS, description=op_events.TARGET_ACTION_SUMMARIES[op_events.CIRCUIT_RESET])
def reset_circuit_breaker(
    context: dg.OpExecutionContext, config: TargetActionConfig, leviathan: LeviathanResource
):
    _target_event(op_events.CIRCUIT_RESET, context, config, config.target, leviathan)


@dg.op(tags=OPS_TAGS, description=op_events.TARGET_ACTION_SUMMARIES[op_events.TARGET_PAUSED])
def pause_target(context: dg.OpExecutionContext, config: TargetActionConfig, leviathan: LeviathanResource):
    _target_event(op_events.TARGET_PAUSED, context, config, config.target, leviathan)


@dg.op(tags=OPS_TAGS, description=op_events.TARGET_ACTION_SUMMARIES[op_events.TARGET_RESUMED])
def resume_target(context: dg.OpExecutionContext, config: TargetActionConfig, leviathan: LeviathanResource):
    _target_event(op_events.TARGET_RESUMED, context, config, config.target, leviathan)


def _job(op_def: dg.OpDefinition, name: str, description: str) -> dg.JobDefinition:
    @dg.job(name=name, description=description, tags=OPS_TAGS)
    def _wrapped():
        op_def()

    return _wrapped


run_task_now_job = _job(
    run_task_now,
    "run_task_now_job",
    "Run one task now, without waiting for the scheduler's next tick or a retry's backoff. Every other "
    "guardrail still applies (paths, dependencies, attempts, open PRs, limits, pause, circuit breaker). "
    "Config: target, task.",
)
cancel_attempt_job = _job(
    cancel_attempt,
    "cancel_attempt_job",
    "Cancel a task's running attempt: terminates its run and whatever the executor launched; the attempt "
    "ends as an infrastructure failure (not counted). Config: target, task, pause_target.",
)
reset_circuit_breaker_job = _job(
    reset_circuit_breaker,
    "reset_circuit_breaker_job",
    "Reset a target's circuit breaker (event circuit.reset) after fixing what made attempts fail.",
)
pause_target_job = _job(
    pause_target, "pause_target_job", "Pause a target: no new attempts (readiness reason 'paused')."
)
resume_target_job = _job(resume_target, "resume_target_job", "Resume a paused target.")
