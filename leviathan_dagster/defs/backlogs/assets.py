"""Backlogs and task readiness, one partition per target.

The scheduling sensor reports both as asset events whenever what it read changed (no run: an idle
system records nothing); these functions compute the same on demand (``refresh_backlogs_job``, the
UI's Materialize), through the same plan, so the readiness shown is the readiness the sensor acts on.
"""

import dagster as dg

from leviathan_dagster.core.attempts.ledger import task_key
from leviathan_dagster.core.scheduling.cycle import read_backlog
from leviathan_dagster.defs.attempts.partitions import tasks_partitions
from leviathan_dagster.defs.attempts.planning import decide
from leviathan_dagster.defs.backlogs.partitions import targets_partitions
from leviathan_dagster.defs.backlogs.reports import (
    BACKLOG_VALID,
    PATHS_IN_SCOPE,
    backlog_checks,
    backlog_metadata,
    decision_summary,
    readiness_metadata,
)
from leviathan_dagster.defs.platform.resources import LeviathanResource

BACKLOG_DESCRIPTION = (
    "The target's .leviathan/backlog.yaml as merged on its base branch (human-curated plan)."
)
READINESS_DESCRIPTION = (
    "Every task: ready or not, with the reason (policy, dependencies, attempts, PRs, limits), as the "
    "scheduler last decided."
)


@dg.asset(
    partitions_def=targets_partitions,
    group_name="backlogs",
    kinds={"yaml", "git"},
    owners=["team:leviathan"],
    tags={"domain": "backlogs"},
    check_specs=[
        dg.AssetCheckSpec(BACKLOG_VALID, asset="backlog", description="The backlog parses and validates."),
        dg.AssetCheckSpec(
            PATHS_IN_SCOPE,
            asset="backlog",
            description="Every task's allowed_paths lie inside the target's allowed_path_prefixes.",
        ),
    ],
    description=BACKLOG_DESCRIPTION,
)
def backlog(context: dg.AssetExecutionContext, leviathan: LeviathanResource):
    target = leviathan.target(context.partition_key)
    snap = read_backlog(target, leviathan.leviathan_home())
    if snap.backlog is None:
        context.log.error(f"backlog of target '{target.id}' is invalid:\n{snap.error}")
    # The asset records what it found even when the backlog is broken; the check carries the verdict,
    # so one broken backlog is visible without stopping other targets' runs.
    archived = None
    if snap.backlog is not None:
        # Partitions of tasks no longer in the backlog: backlog_sensor keeps them only for tasks that
        # had attempts (core/scheduling/partition_keys.py), so their history stays in the UI.
        live = {task_key(target.id, t.id) for t in snap.backlog.tasks}
        prefix = f"{target.id}/"
        archived = [
            key
            for key in context.instance.get_dynamic_partitions(tasks_partitions.name)
            if key.startswith(prefix) and key not in live
        ]
    yield dg.MaterializeResult(metadata=backlog_metadata(target, snap.backlog, snap.error, archived))
    for outcome in backlog_checks(target, snap.backlog, snap.error):
        yield outcome.result()


@dg.asset(
    partitions_def=targets_partitions,
    group_name="readiness",
    deps=[backlog],
    kinds={"python"},
    owners=["team:leviathan"],
    tags={"domain": "readiness"},
    description=READINESS_DESCRIPTION,
)
def task_readiness(context: dg.AssetExecutionContext, leviathan: LeviathanResource) -> dg.MaterializeResult:
    target = leviathan.target(context.partition_key)
    # The scheduler's own decision (the one planning API), so the readiness shown on demand is what
    # attempt_sensor would act on now; its run requests are left to the sensor.
    plan = decide(context.instance, leviathan).plan
    snap = plan.snapshots.get(target.id)
    if snap is None or not snap.ok:
        error = snap.error if snap is not None else "not scheduled (another target was asked for)"
        raise dg.Failure(description=f"target '{target.id}': {error}", allow_retries=False)
    decision = decision_summary(snap, [], "the on-demand refresh")
    return dg.MaterializeResult(metadata=readiness_metadata(snap, [], plan.decided_at, decision))
