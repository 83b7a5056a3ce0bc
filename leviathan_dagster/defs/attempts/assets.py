"""Attempt outcomes, one partition per task: each materialization is one attempt that opened a PR."""

import dagster as dg
from pydantic import Field

from leviathan_dagster.core import attempts as at
from leviathan_dagster.core.attempt_details import attempt_details
from leviathan_dagster.core.attempt_runner import (
    DuplicateAttempt,
    execute_attempt,
    plan_next_attempt,
    reconcile_lost_attempts,
)
from leviathan_dagster.core.attempts import AttemptLedger, AttemptRecord
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.executors.registry import get_executor
from leviathan_dagster.core.models import TargetConfig
from leviathan_dagster.core.projections.log_view import current_ledger
from leviathan_dagster.core.readiness import BACKOFF, evaluate_task_alone
from leviathan_dagster.core.scheduling import snapshot_target
from leviathan_dagster.defs.attempts.partitions import tasks_partitions
from leviathan_dagster.defs.backlogs.assets import task_readiness
from leviathan_dagster.defs.platform.resources import LeviathanResource
from leviathan_dagster.defs.platform.runs import ATTEMPT_JOB, queued_tasks_by_target, run_is_alive


class AttemptConfig(dg.Config):
    executor: str | None = Field(
        default=None,
        description="Executor to run the attempt with (local, k8s, k8s-stub); default: the target's.",
    )


# Transient errors only (git remote, lock, disk): a real attempt failure raises Failure(allow_retries=False).
TRANSIENT_RETRY = dg.RetryPolicy(
    max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
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
    target = leviathan.target(target_id)
    events = leviathan.event_log()
    run_id = context.run.run_id
    reconcile_lost_attempts(
        current_ledger(events),
        lambda other: other == run_id or run_is_alive(context.instance, other),
        events,
    )
    ledger = current_ledger(events)
    running = ledger.task(target_id, task_id).in_flight()
    if running is not None:
        raise dg.Failure(
            description=(
                f"attempt {running.number} of {context.partition_key} is still running (run {running.run_id})"
            ),
            allow_retries=False,
        )
    _require_still_ready(context, leviathan, target, task_id, ledger)
    planned = plan_next_attempt(target, task_id, ledger)
    executor = get_executor(config.executor or target.executor, leviathan.project())
    context.log.info(f"attempt {planned.attempt_number} ({planned.attempt_id}) of {context.partition_key}")
    try:
        record = execute_attempt(
            planned,
            leviathan.leviathan_home(),
            leviathan.config_path_resolved(),
            executor,
            events,
            run_id=run_id,
        )
    except DuplicateAttempt as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    details = attempt_details(events, leviathan.leviathan_home(), record.attempt_id)
    metadata = attempt_metadata(record, details)
    if record.status != at.SUCCEEDED:
        raise dg.Failure(
            description=f"attempt {record.number} failed ({record.failure_type}): {record.error_summary}",
            metadata=metadata,
            # Infrastructure failures do not count against the task: retry them inside this run.
            allow_retries=record.failure_type == at.INFRASTRUCTURE,
        )
    return dg.MaterializeResult(metadata=metadata)


def _require_still_ready(
    context: dg.AssetExecutionContext,
    leviathan: LeviathanResource,
    target: TargetConfig,
    task_id: str,
    ledger: AttemptLedger,
) -> None:
    """The last word before anything is created: readiness again, at run time.

    The sensor decided on a snapshot; by the time this run starts, another run may have opened a PR or
    taken the target's last slot (two daemons, the CLI, a run queued for long). Only the schedule wait
    (backoff) is not re-checked: that is the sensor's job, and a re-launched run must not wait for it.
    The task is judged alone (``evaluate_task_alone``): limits count what really runs, not other tasks
    that merely became ready since.
    """
    live = queued_tasks_by_target(context.instance, ATTEMPT_JOB, ledger, exclude_run=context.run.run_id)
    queued, now = live.get(target.id, frozenset()), utc_now()
    snap = snapshot_target(target, leviathan.leviathan_home(), ledger, now, queued_tasks=queued)
    if not snap.ok:
        raise dg.Failure(description=f"target '{target.id}': {snap.error}", allow_retries=False)
    if snap.backlog.get(task_id) is None:
        raise dg.Failure(description=f"task '{task_id}' is no longer in the backlog", allow_retries=False)
    # Judged alone: this run already holds the slot the sensor gave it, so a higher-priority task that
    # became ready since (a backoff just ended) must not push it out.
    verdict = evaluate_task_alone(
        target,
        snap.backlog,
        ledger,
        snap.open_prs,
        now,
        task_id=task_id,
        queued_tasks=queued,
    )
    if not verdict.ready and verdict.reason != BACKOFF:
        raise dg.Failure(
            description=f"not attempted: {verdict.reason}: {verdict.detail}",
            metadata={"reason": verdict.reason, "detail": verdict.detail},
            allow_retries=False,
        )


def attempt_metadata(record: AttemptRecord, details: dict[str, object] | None = None) -> dict[str, object]:
    """What an operator acts on: PR link, branch, commit, attempt number, failure, duration, diff stat,
    touched paths and token totals (``details`` from core/attempt_details.py)."""
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
    if record.pr_number:
        metadata["pr_number"] = record.pr_number
        metadata["pr_url"] = dg.MetadataValue.url(record.pr_url) if record.pr_url else ""
    if record.usage:  # model token totals of the attempt (never prompts): input, output, cache
        usage = record.usage
        metadata["model"] = usage.get("model") or ""
        metadata["model_calls"] = usage.get("calls", 0)
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ):
            metadata[name] = usage.get(name, 0)
    details = dict(details or {})
    if "touched_paths" in details:
        metadata["touched_paths"] = dg.MetadataValue.md(
            "\n".join(f"- `{p}`" for p in details.pop("touched_paths"))
        )
    return metadata | details
