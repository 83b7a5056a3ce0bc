"""Operator actions, launched from the Dagster launchpad: each one is recorded in the event log with
the operator's identity (``operator:<name>``), and none of them can step outside policy."""

import dagster as dg

from leviathan_dagster.core.attempts import operator as op_events
from leviathan_dagster.core.attempts.ledger import task_key
from leviathan_dagster.core.errors import LeviathanError
from leviathan_dagster.core.executors.registry import get_executor
from leviathan_dagster.core.projections.log_view import current_ledger
from leviathan_dagster.defs.attempts.assets import attempt_outcomes
from leviathan_dagster.defs.attempts.attempt_run import TRANSIENT_RETRY, RunNow, run_attempt
from leviathan_dagster.defs.operations.config import (
    CancelAttemptConfig,
    OperatorConfig,
    RunTaskNowConfig,
    TargetActionConfig,
    TaskActionConfig,
    operator_name,
)
from leviathan_dagster.defs.platform.resources import LeviathanResource
from leviathan_dagster.defs.platform.runs import run_is_alive

OPS_TAGS = {"leviathan/kind": "operator-action"}


def _fail(exc: LeviathanError) -> dg.Failure:
    return dg.Failure(description=str(exc), allow_retries=False)


@dg.op(
    tags=OPS_TAGS,
    retry_policy=TRANSIENT_RETRY,
    description="Start one attempt at a task now, if policy allows it (see run_task_now_job).",
)
def run_task_now(context: dg.OpExecutionContext, config: RunTaskNowConfig, leviathan: LeviathanResource):
    # The same attempt body as attempt_outcomes' (run-time re-check, events, retry policy); its
    # result is the task partition's materialization, so the partition view shows every attempt,
    # however it was started. Materializing the partition with run_now: true does the same.
    operator = operator_name(context, config)
    metadata = run_attempt(
        context,
        leviathan,
        config.target,
        config.task,
        executor=config.executor,
        run_now=RunNow(operator, config.reason),
    )
    partition = task_key(config.target, config.task)
    context.log_event(
        dg.AssetMaterialization(asset_key=attempt_outcomes.key, partition=partition, metadata=metadata)
    )


@dg.op(tags=OPS_TAGS, description="Cancel a task's running attempt: terminate its run and what it launched.")
def cancel_attempt(context: dg.OpExecutionContext, config: CancelAttemptConfig, leviathan: LeviathanResource):
    operator = operator_name(context, config)
    actor = op_events.operator_actor(operator)
    try:
        target = leviathan.target(config.target)
        # The cancel flow is core's (core.operator.cancel_attempt); stopping a Dagster run is ours.
        outcome = op_events.cancel_attempt(
            leviathan.event_log(),
            target,
            config.task,
            operator,
            reason=config.reason,
            pause_target=config.pause_target,
            terminate_run=lambda run_id: _terminate_run(context.instance, run_id, actor),
            cleanup=get_executor(target.executor).cleanup,
        )
    except LeviathanError as exc:
        raise _fail(exc) from exc
    terminated = f"run {outcome.run_id} terminated: {outcome.terminated}"
    context.log.info(f"attempt {outcome.attempt_id}: {outcome.summary} ({terminated})")


def _terminate_run(instance: dg.DagsterInstance, run_id: str, actor: str) -> bool:
    """Stop an attempt's run if it is alive: the run coordinator cancels a queued run directly and asks
    the run launcher to terminate a started one; the run's own interrupt then runs the executor's
    cleanup (kills the worker)."""
    if not run_is_alive(instance, run_id):
        return False
    run = instance.get_run_by_id(run_id)
    if run is not None and run.status == dg.DagsterRunStatus.NOT_STARTED:
        # Created but never handed to a launcher: nothing runs, so there is nothing to interrupt.
        instance.report_run_canceled(run, message=f"canceled by {actor}")
        return True
    return instance.run_coordinator.cancel_run(run_id)


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


@dg.op(tags=OPS_TAGS, description=op_events.CLEAR_ESCALATION_SUMMARY)
def clear_escalation(context: dg.OpExecutionContext, config: TaskActionConfig, leviathan: LeviathanResource):
    try:
        target = leviathan.target(config.target)
        events = leviathan.event_log()
        ledger = current_ledger(events)
        event = op_events.clear_escalation_event(
            target, ledger, config.task, operator_name(context, config), config.reason
        )
    except LeviathanError as exc:
        raise _fail(exc) from exc
    events.append([event])
    context.log.info(
        f"{event.event_type} for {target.id}/{config.task} ({event.payload['cleared']}) by {event.actor_id}"
    )


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
clear_escalation_job = _job(
    clear_escalation,
    "clear_escalation_job",
    "Clear a task's escalation (event task.escalation_cleared) after fixing it on the base branch: its "
    "earlier attempts no longer count against max_attempts_per_task, escalation_after, the "
    "infrastructure streak or the backoff. Config: target, task, reason.",
)
