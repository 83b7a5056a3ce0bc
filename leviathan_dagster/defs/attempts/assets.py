"""Attempt outcomes, one partition per task: each materialization is one attempt that opened a PR."""

from dataclasses import replace

import dagster as dg
from pydantic import Field

from leviathan_dagster.core.attempts import ledger as at
from leviathan_dagster.core.errors import LeviathanError
from leviathan_dagster.core.models import Policy
from leviathan_dagster.defs.attempts.attempt_run import TRANSIENT_RETRY, RunNow, attempt_metadata, run_attempt
from leviathan_dagster.defs.attempts.outcomes import current_outcome, fail_with_outcome, outcome_observation
from leviathan_dagster.defs.attempts.partitions import tasks_partitions
from leviathan_dagster.defs.backlogs.assets import task_readiness
from leviathan_dagster.defs.operations.config import USER_TAGS
from leviathan_dagster.defs.platform.resources import LeviathanResource

__all__ = ["TRANSIENT_RETRY", "AttemptConfig", "attempt_metadata", "attempt_outcomes"]


class AttemptConfig(dg.Config):
    executor: str | None = Field(
        default=None,
        description="Executor to run the attempt with (local, k8s, k8s-stub); default: the target's.",
    )
    max_attempts_per_task: int | None = Field(
        default=None,
        description="Override the target's max_attempts_per_task for this run (the CLI's --max-attempts).",
    )
    run_now: bool = Field(
        default=False,
        description=(
            "An operator's run-now: materialize this task's partition with run_now: true to start its "
            "attempt without waiting for the scheduler's tick or a retry's backoff. Every other "
            "guardrail holds, the global limit included; recorded as operator.run_now."
        ),
    )
    operator: str = Field(
        default="",
        description="With run_now: who you are (operator:<name>), when the run has no user tag.",
    )
    reason: str = Field(default="", description="With run_now: why, kept with the event in the audit log.")
    record_outcome: bool = Field(
        default=False,
        description=(
            "Start no attempt: record the task's current outcome on its partition, and fail if it "
            "failed (record_task_outcome_job, for a PR closed unmerged after its attempt succeeded)."
        ),
    )


@dg.asset(
    partitions_def=tasks_partitions,
    group_name="attempts",
    deps=[dg.AssetDep(task_readiness, partition_mapping=dg.AllPartitionMapping())],
    kinds={"git"},
    owners=["team:leviathan"],
    tags={"domain": "attempts"},
    retry_policy=TRANSIENT_RETRY,
    description="One attempt at a task: clone, generate, check policy on the diff, test, push, open a PR.",
)
def attempt_outcomes(
    context: dg.AssetExecutionContext, config: AttemptConfig, leviathan: LeviathanResource
) -> dg.MaterializeResult:
    target_id, task_id = at.split_task_key(context.partition_key)
    policy = _policy(leviathan, target_id, config.max_attempts_per_task)
    if config.record_outcome:
        outcome = current_outcome(leviathan.event_log(), policy, target_id, task_id)
        fail_with_outcome(context, outcome)
        # No longer failed by the time this run started (a new attempt since): its record, as is.
        shown = attempt_metadata(outcome.attempt) if outcome.attempt else {}
        return dg.MaterializeResult(metadata=shown | outcome.as_metadata())
    run_now = None
    if config.run_now:
        tags = context.run.tags
        run_now = RunNow(
            next((tags[t] for t in USER_TAGS if tags.get(t)), None) or config.operator, config.reason
        )
    try:
        metadata = run_attempt(
            context.op_execution_context,
            leviathan,
            target_id,
            task_id,
            executor=config.executor,
            max_attempts_per_task=config.max_attempts_per_task,
            run_now=run_now,
        )
    except dg.Failure:
        # The failed run turns the partition red; the observation says why (failure type, reason).
        context.log_event(
            outcome_observation(current_outcome(leviathan.event_log(), policy, target_id, task_id))
        )
        raise
    outcome = current_outcome(leviathan.event_log(), policy, target_id, task_id)
    return dg.MaterializeResult(
        metadata=metadata | {"outcome": outcome.state, "outcome_reason": outcome.reason}
    )


def _policy(leviathan: LeviathanResource, target_id: str, max_attempts_per_task: int | None) -> Policy:
    try:
        policy = leviathan.target(target_id).policy
    except LeviathanError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    if max_attempts_per_task is None:
        return policy
    return replace(policy, max_attempts_per_task=max_attempts_per_task)
