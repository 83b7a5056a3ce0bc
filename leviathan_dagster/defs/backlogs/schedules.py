import dagster as dg

from leviathan_dagster.defs.backlogs.jobs import refresh_backlogs_job
from leviathan_dagster.defs.backlogs.partitions import targets_partitions
from leviathan_dagster.defs.platform.resources import LeviathanResource


@dg.schedule(
    job=refresh_backlogs_job,
    cron_schedule="*/5 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 5 minutes: refresh every target's backlog and task readiness (one run per target).",
)
def refresh_backlogs_schedule(context: dg.ScheduleEvaluationContext, leviathan: LeviathanResource):
    target_ids = [t.id for t in leviathan.project().targets]
    # Schedules cannot return dynamic-partition requests, so new targets are registered directly.
    known = set(context.instance.get_dynamic_partitions(targets_partitions.name))
    new = [t for t in target_ids if t not in known]
    if new:
        context.instance.add_dynamic_partitions(targets_partitions.name, new)
    return [
        dg.RunRequest(partition_key=t, tags={"leviathan/refresh-target": t}) for t in target_ids
    ] or dg.SkipReason("no targets in leviathan.yaml")
