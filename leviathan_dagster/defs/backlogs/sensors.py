"""The backlog sensor: notices when a target's backlog changed, and only then records it.

Every tick it reads each target's backlog from its base branch (cheap when unchanged) and compares
its version with the cursor's. For each changed backlog it:

- adds the partitions of new tasks and deletes or archives those of tasks that left
  (core/scheduling/partition_keys.py says which and why), listing the partitions only then;
- requests one run of the ``backlog`` asset for that target, which records the backlog and its
  checks (and the archived tasks). A run and not a run-less asset event: Dagster 1.13 stores a
  run-less check evaluation of a partition only once (``asset_check_executions`` is unique on
  (asset, check, run_id, partition) and a run-less evaluation has run_id ""), so the checks of a
  target could never be reported twice.

An unchanged tick requests nothing and records nothing; the backlog's run is not an audit fact, so
it never reaches Leviathan's event log.
"""

from __future__ import annotations

import json

import dagster as dg

from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.forge.tick_budget import skipped_this_tick, tick_reads
from leviathan_dagster.core.projections.log_view import current_ledger
from leviathan_dagster.core.scheduling.cycle import read_backlog
from leviathan_dagster.core.scheduling.partition_keys import plan_task_partitions
from leviathan_dagster.defs.attempts.partitions import tasks_partitions
from leviathan_dagster.defs.backlogs.jobs import refresh_backlogs_job
from leviathan_dagster.defs.backlogs.partitions import targets_partitions
from leviathan_dagster.defs.backlogs.reports import backlog_version
from leviathan_dagster.defs.platform.resources import LeviathanResource

BACKLOG_KEY = dg.AssetKey("backlog")


@dg.sensor(
    job=refresh_backlogs_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Records a target's backlog (asset, checks, task partitions) when its content on the base "
        "branch changed; an unchanged backlog costs one read and records nothing."
    ),
)
def backlog_sensor(context: dg.SensorEvaluationContext, leviathan: LeviathanResource):
    try:
        project = leviathan.project()
    except ConfigError as exc:
        return dg.SkipReason(f"leviathan.yaml is invalid: {exc}")
    home = leviathan.leviathan_home()
    try:
        cursor = dict(json.loads(context.cursor)) if context.cursor else {}
    except (ValueError, TypeError):
        cursor = {}  # an old or foreign cursor: record every backlog once more
    snaps, versions = {}, {}
    with tick_reads():  # a rate limit skips that target this tick instead of holding the loop
        for target in project.targets:
            if leviathan.only_target not in (None, target.id):
                continue
            snap = read_backlog(target, home)
            if snap.transient:  # not a new version of the backlog: its cursor stays, read next tick
                context.log.warning(skipped_this_tick(target.id, "backlog", snap.error))
                continue
            snaps[target.id] = snap
            versions[target.id] = backlog_version(snap.backlog, snap.error)
    changed = sorted(tid for tid, version in versions.items() if cursor.get(tid) != version)
    # First sight of a target (a new sensor, a reset cursor): a backlog already recorded at this version
    # (by an earlier daemon, or on demand) needs no new run; its partitions are still brought in line.
    instance = context.instance
    recorded = {
        tid for tid in changed if tid not in cursor and _recorded_version(instance, tid) == versions[tid]
    }
    if not changed:
        return dg.SkipReason(f"{len(versions)} backlogs unchanged")
    requests = []
    known_targets = set(context.instance.get_dynamic_partitions(targets_partitions.name))
    if new_targets := [t for t in changed if t not in known_targets]:
        requests.append(targets_partitions.build_add_request(new_targets))
    live = {tid: [t.id for t in snaps[tid].backlog.tasks] for tid in changed if snaps[tid].backlog}
    if live:
        ledger = current_ledger(leviathan.event_log())
        changes = plan_task_partitions(
            live,
            context.instance.get_dynamic_partitions(tasks_partitions.name),
            lambda target_id, task_id: bool(ledger.task(target_id, task_id).attempts),
        )
        if changes.add:
            requests.append(tasks_partitions.build_add_request(changes.add))
        if changes.delete:
            requests.append(tasks_partitions.build_delete_request(changes.delete))
    cursor.update({tid: versions[tid] for tid in changed})
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=tid,
                asset_selection=[BACKLOG_KEY],
                tags={"leviathan/refresh-target": tid, "leviathan/backlog-version": versions[tid]},
            )
            for tid in changed
            if tid not in recorded
        ],
        dynamic_partitions_requests=requests,
        cursor=json.dumps(cursor, sort_keys=True),
    )


def _recorded_version(instance: dg.DagsterInstance, target_id: str) -> str | None:
    """The ``version`` of the target's latest backlog materialization, if any (one indexed query)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=BACKLOG_KEY, asset_partitions=[target_id]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    value = records[0].asset_materialization.metadata.get("version")
    return getattr(value, "value", value)
