"""The PR lifecycle sensor: merges and closes done on the forge become events (core/attempts/pr_lifecycle),
and every change of a task's outcome since its attempt's run reaches the task's partition
(defs/attempts/outcomes.py): a PR closed unmerged turns it red, a cleared escalation or a merge is
reported on it. Its cursor is the event-log seq it has looked at, so those changes are found whoever
recorded them (this sensor, ``leviathan prs close``, ``leviathan task clear-escalation``)."""

import json

import dagster as dg

from leviathan_dagster.core.attempts.pr_lifecycle import sync_pull_requests
from leviathan_dagster.core.errors import ConfigError, LeviathanError, TransientError
from leviathan_dagster.core.forge.registry import forge_for
from leviathan_dagster.core.forge.tick_budget import skipped_this_tick, tick_reads
from leviathan_dagster.core.projections.log_view import view_of
from leviathan_dagster.defs.attempts.jobs import record_outcome_job
from leviathan_dagster.defs.attempts.outcomes import outcome_events
from leviathan_dagster.defs.attempts.partitions import tasks_partitions
from leviathan_dagster.defs.platform.resources import LeviathanResource


@dg.sensor(
    job=record_outcome_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Polls every target's open Leviathan PRs on its forge and records pr.merged (the task completes, "
        "its dependents become ready) or pr.closed (a failed attempt under the policy). Idempotent. "
        "Shows each task's changed outcome on its attempt_outcomes partition (a closed PR: failed)."
    ),
)
def pr_lifecycle_sensor(context: dg.SensorEvaluationContext, leviathan: LeviathanResource):
    try:
        project = leviathan.project()
    except ConfigError as exc:
        return dg.SkipReason(f"leviathan.yaml is invalid: {exc}")
    # The view's long-lived store: its duplicate index is kept across ticks instead of rebuilt.
    view = view_of(leviathan.event_log())
    events, home = view.store, leviathan.leviathan_home()
    parts = []
    with tick_reads():  # a rate limit skips that target this tick instead of holding the loop
        for target in project.targets:
            if leviathan.only_target not in (None, target.id):
                continue
            try:
                result = sync_pull_requests(target, forge_for(target, home), events)
            except TransientError as exc:
                context.log.warning(skipped_this_tick(target.id, "PRs", exc))
                parts.append(f"{target.id}: skipped this tick")
                continue
            except LeviathanError as exc:
                # One broken target (bad credentials, a missing repository) never stops the others.
                context.log.warning(f"target '{target.id}': PRs not checked: {exc}")
                parts.append(f"{target.id}: error")
                continue
            parts.append(
                f"{target.id}: {len(result.merged)} merged, {len(result.closed)} closed, "
                f"{len(result.still_open)} open, {len(result.ready_for_review)} ready for review"
            )
    with view.current():
        observations, runs, seq = outcome_events(events, project, _outcome_seq(context.cursor))
    instance = context.instance
    runs = [r for r in runs if instance.has_dynamic_partition(tasks_partitions.name, r.partition_key)]
    if runs or observations:
        parts.append(f"{len(runs)} partitions failed, {len(observations)} outcomes reported")
    return dg.SensorResult(
        run_requests=runs,
        asset_events=observations,
        skip_reason=None if runs else "; ".join(parts) or "no targets",
        cursor=json.dumps({"outcome_seq": seq}),
    )


def _outcome_seq(cursor: str | None) -> int | None:
    try:
        seq = json.loads(cursor)["outcome_seq"] if cursor else None
    except (ValueError, TypeError, KeyError):
        return None  # an old or foreign cursor: look at the ledger once more
    return seq if isinstance(seq, int) else None
