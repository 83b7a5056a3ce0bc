"""Every run of Leviathan's jobs into the event log, exactly once (see core/run_events.py for why)."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from leviathan_dagster.core.run_events import record_runs
from leviathan_dagster.defs.platform.resources import LeviathanResource
from leviathan_dagster.defs.platform.run_records import LEVIATHAN_JOBS, leviathan_run_records, run_info

# Reconciliation re-reads a little before its cursor: run records updated in the same instant as the
# last tick are not lost, and the idempotent append makes the overlap free.
_OVERLAP = timedelta(minutes=1)


def _record_run_sensor(status: dg.DagsterRunStatus, name: str) -> dg.SensorDefinition:
    @dg.run_status_sensor(
        run_status=status,
        name=name,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Records {status.value} runs of Leviathan's jobs in the event log (idempotent).",
    )
    def _sensor(context: dg.RunStatusSensorContext, leviathan: LeviathanResource):
        if context.dagster_run.job_name not in LEVIATHAN_JOBS:
            return dg.SkipReason(f"{context.dagster_run.job_name} is not a Leviathan job")
        record = context.instance.get_run_record_by_id(context.dagster_run.run_id)
        if record is not None:
            record_runs(leviathan.event_log(), [run_info(context.instance, record)])
        return None

    return _sensor


run_started_to_log = _record_run_sensor(dg.DagsterRunStatus.STARTED, "run_started_to_event_log")
run_succeeded_to_log = _record_run_sensor(dg.DagsterRunStatus.SUCCESS, "run_succeeded_to_event_log")
run_failed_to_log = _record_run_sensor(dg.DagsterRunStatus.FAILURE, "run_failed_to_event_log")
run_canceled_to_log = _record_run_sensor(dg.DagsterRunStatus.CANCELED, "run_canceled_to_event_log")


@dg.sensor(
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Back-fills run events the run-status sensors missed (runs that ended before their first tick, "
        "daemon restarts) from the instance's run records."
    ),
)
def reconcile_run_events(context: dg.SensorEvaluationContext, leviathan: LeviathanResource):
    since = datetime.fromisoformat(context.cursor) - _OVERLAP if context.cursor else None
    records = leviathan_run_records(context.instance, updated_after=since)
    written = record_runs(leviathan.event_log(), [run_info(context.instance, r) for r in records])
    if records:
        newest = max(r.update_timestamp for r in records)
        context.update_cursor(newest.astimezone(UTC).isoformat())
    return dg.SkipReason(f"{len(records)} runs checked, {written} run events back-filled")
