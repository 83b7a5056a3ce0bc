"""The scheduling sensor: every tick, one Leviathan scheduler cycle over all targets.

Besides requesting attempt runs it reports what it decided, without any run: a target's
``task_readiness`` (the plan this tick acted on) as an asset event, only when a verdict changed. Its
cursor holds each target's readiness version, so an unchanged tick records nothing anywhere. The
backlogs themselves (their asset, checks and task partitions) are backlog_sensor's.
"""

from __future__ import annotations

import json

import dagster as dg

from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.forge.tick_budget import tick_reads
from leviathan_dagster.core.scheduling.cycle import CyclePlan
from leviathan_dagster.defs.attempts.jobs import attempt_job
from leviathan_dagster.defs.attempts.partitions import tasks_partitions
from leviathan_dagster.defs.attempts.planning import attempt_run_request, decide, describe_idle
from leviathan_dagster.defs.backlogs.partitions import targets_partitions
from leviathan_dagster.defs.backlogs.reports import decision_summary, readiness_metadata, readiness_version
from leviathan_dagster.defs.platform.resources import LeviathanResource

__all__ = ["attempt_run_request", "attempt_sensor", "describe_idle"]

READINESS_KEY = dg.AssetKey("task_readiness")


@dg.sensor(
    job=attempt_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Leviathan's scheduler: reads every target's backlog, computes readiness under policy and "
        "requests one attempt run per ready task (run_key <target>/<task>:<attempt>); reports "
        "task_readiness as an asset event when it changes (no refresh runs)."
    ),
)
def attempt_sensor(context: dg.SensorEvaluationContext, leviathan: LeviathanResource):
    try:
        with tick_reads():  # a target rate-limited now is skipped (a warning) and planned next tick
            decision = decide(context.instance, leviathan)
    except ConfigError as exc:
        return dg.SkipReason(f"leviathan.yaml is invalid: {exc}")
    for warning in decision.warnings:
        context.log.warning(warning)
    plan = decision.plan
    cursor = _load_cursor(context.cursor)
    result = {
        "asset_events": _readiness_events(plan, cursor),
        "dynamic_partitions_requests": _partition_requests(context.instance, decision, cursor),
        "cursor": json.dumps(cursor, sort_keys=True),
    }
    if decision.run_requests:
        return dg.SensorResult(run_requests=decision.run_requests, **result)
    skip = describe_idle(plan)
    context.log.info(skip)  # in the tick's "View logs" too, not only in its Result dialog
    return dg.SensorResult(skip_reason=skip, **result)


def _load_cursor(raw: str | None) -> dict[str, dict[str, str]]:
    try:
        cursor = json.loads(raw) if raw else {}
    except ValueError:
        cursor = {}  # an old or foreign cursor: report everything once more
    if not isinstance(cursor, dict):
        cursor = {}
    return {name: dict(cursor.get(name) or {}) for name in ("readiness", "targets")}


def _readiness_events(plan: CyclePlan, cursor: dict[str, dict[str, str]]) -> list:
    """task_readiness of every target whose verdicts changed since the cursor (updated in place):
    exactly the readiness this tick acted on, with the tasks it requested runs for."""
    events: list = []
    selected: dict[str, list[str]] = {}
    for ready in plan.selected:
        selected.setdefault(ready.target_id, []).append(ready.task_id)
    for target_id, snap in sorted(plan.snapshots.items()):
        if not snap.ok:
            continue
        decided = readiness_version(snap) + ":" + ",".join(selected.get(target_id, []))
        if cursor["readiness"].get(target_id) != decided:
            cursor["readiness"][target_id] = decided
            tasks = selected.get(target_id, [])
            decision = decision_summary(snap, tasks, "attempt_sensor")
            metadata = readiness_metadata(snap, tasks, plan.decided_at, decision)
            events.append(dg.AssetMaterialization(READINESS_KEY, partition=target_id, metadata=metadata))
    return events


def _partition_requests(instance: dg.DagsterInstance, decision, cursor: dict[str, dict[str, str]]) -> list:
    """Target partitions for targets new to this sensor, and the partitions its runs need (usually
    added by backlog_sensor already): a few indexed lookups, never a listing of every partition."""
    requests = []
    new_targets = [t for t in sorted(decision.plan.snapshots) if t not in cursor["targets"]]
    missing = [t for t in new_targets if not instance.has_dynamic_partition(targets_partitions.name, t)]
    if missing:
        requests.append(targets_partitions.build_add_request(missing))
    cursor["targets"].update(dict.fromkeys(new_targets, "1"))
    keys = [r.partition_key for r in decision.run_requests]
    missing = [k for k in keys if not instance.has_dynamic_partition(tasks_partitions.name, k)]
    if missing:
        requests.append(tasks_partitions.build_add_request(missing))
    return requests
