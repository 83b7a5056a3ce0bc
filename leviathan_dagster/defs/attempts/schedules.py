"""A fixed cadence instead of the sensor, for operators who want one: the same decision, every 5 min."""

import dagster as dg

from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.defs.attempts.jobs import attempt_job
from leviathan_dagster.defs.attempts.partitions import tasks_partitions
from leviathan_dagster.defs.attempts.planning import decide, describe_idle
from leviathan_dagster.defs.backlogs.partitions import targets_partitions
from leviathan_dagster.defs.platform.resources import LeviathanResource


@dg.schedule(
    job=attempt_job,
    cron_schedule="*/5 * * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        "Every 5 minutes: one scheduler cycle, deciding exactly as attempt_sensor does (same planning "
        "and run keys; a run both requested is refused by its run-time re-check, never attempted "
        "twice). Stopped by default: start it for a fixed cadence, and stop attempt_sensor."
    ),
)
def attempt_schedule(context: dg.ScheduleEvaluationContext, leviathan: LeviathanResource):
    try:
        decision = decide(context.instance, leviathan)
    except ConfigError as exc:
        return dg.SkipReason(f"leviathan.yaml is invalid: {exc}")
    # Schedules cannot return dynamic-partition requests: register what the requested runs need.
    instance = context.instance
    for name, keys in (
        (targets_partitions.name, sorted({r.tags["leviathan/target"] for r in decision.run_requests})),
        (tasks_partitions.name, [r.partition_key for r in decision.run_requests]),
    ):
        missing = [k for k in keys if not instance.has_dynamic_partition(name, k)]
        if missing:
            instance.add_dynamic_partitions(name, missing)
    return decision.run_requests or dg.SkipReason(describe_idle(decision.plan))
