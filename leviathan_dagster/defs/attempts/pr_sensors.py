"""The PR lifecycle sensor: merges and closes done on the forge become events (core/attempts/pr_lifecycle)."""

import dagster as dg

from leviathan_dagster.core.attempts.pr_lifecycle import sync_pull_requests
from leviathan_dagster.core.errors import ConfigError, LeviathanError, TransientError
from leviathan_dagster.core.forge.registry import forge_for
from leviathan_dagster.core.forge.tick_budget import skipped_this_tick, tick_reads
from leviathan_dagster.core.projections.log_view import view_of
from leviathan_dagster.defs.platform.resources import LeviathanResource


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Polls every target's open Leviathan PRs on its forge and records pr.merged (the task completes, "
        "its dependents become ready) or pr.closed (a failed attempt under the policy). Idempotent."
    ),
)
def pr_lifecycle_sensor(context: dg.SensorEvaluationContext, leviathan: LeviathanResource):
    try:
        project = leviathan.project()
    except ConfigError as exc:
        return dg.SkipReason(f"leviathan.yaml is invalid: {exc}")
    # The view's long-lived store: its duplicate index is kept across ticks instead of rebuilt.
    events, home = view_of(leviathan.event_log()).store, leviathan.leviathan_home()
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
    return dg.SkipReason("; ".join(parts) or "no targets")
