from datetime import timedelta

import dagster as dg

from leviathan_dagster.defs.delivery.jobs import delivery_metrics_job, event_log_job


@dg.schedule(
    job=delivery_metrics_job,
    cron_schedule="7 0 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Daily, just after midnight UTC: the complete delivery metrics and costs of the day that ended "
        "(today's figures so far: materialize today's partition on demand)."
    ),
)
def delivery_metrics_schedule(context: dg.ScheduleEvaluationContext):
    day = context.scheduled_execution_time.date() - timedelta(days=1)
    return dg.RunRequest(partition_key=day.isoformat(), run_key=day.isoformat())


@dg.schedule(
    job=event_log_job,
    cron_schedule="17 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly: re-verify the event log's hash chain (and the newest checkpoint) as an asset check.",
)
def event_log_schedule(context: dg.ScheduleEvaluationContext):
    return dg.RunRequest()
