from datetime import timedelta

import dagster as dg

from leviathan_dagster.defs.delivery.jobs import delivery_metrics_job, event_log_job


@dg.schedule(
    job=delivery_metrics_job,
    cron_schedule="7 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Hourly: today's delivery metrics so far; in the first hour of a UTC day also the day before, "
        "so every finished day gets its complete figures."
    ),
)
def delivery_metrics_schedule(context: dg.ScheduleEvaluationContext):
    now = context.scheduled_execution_time
    days = [now.date()] + ([now.date() - timedelta(days=1)] if now.hour == 0 else [])
    return [dg.RunRequest(partition_key=d.isoformat(), run_key=f"{d}@{now:%Y-%m-%dT%H}") for d in days]


@dg.schedule(
    job=event_log_job,
    cron_schedule="17 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly: re-verify the event log's hash chain (and the newest checkpoint) as an asset check.",
)
def event_log_schedule(context: dg.ScheduleEvaluationContext):
    return dg.RunRequest()
