"""Dagster's run records, mapped once into Leviathan's ``RunInfo`` (no Dagster types past here)."""

from datetime import UTC, datetime

import dagster as dg

from leviathan_dagster.core.run_events import RunInfo

_STATUS = {
    dg.DagsterRunStatus.QUEUED: "queued",
    dg.DagsterRunStatus.NOT_STARTED: "queued",
    dg.DagsterRunStatus.STARTING: "queued",
    dg.DagsterRunStatus.STARTED: "started",
    dg.DagsterRunStatus.CANCELING: "started",
    dg.DagsterRunStatus.SUCCESS: "succeeded",
    dg.DagsterRunStatus.FAILURE: "failed",
    dg.DagsterRunStatus.CANCELED: "canceled",
}
# Only Leviathan's own jobs are recorded (a shared instance may run other code locations too).
LEVIATHAN_JOBS = ("attempt_job", "refresh_backlogs_job", "run_task_now_job")


def run_info(instance: dg.DagsterInstance, record: dg.RunRecord) -> RunInfo:
    run = record.dagster_run
    status = _STATUS.get(run.status, "other")
    return RunInfo(
        run_id=run.run_id,
        job_name=run.job_name,
        status=status,
        partition=run.tags.get("dagster/partition"),
        tags={
            k: v
            for k, v in sorted(run.tags.items())
            if not k.startswith("dagster/") or k == "dagster/run_key"
        },
        started_at=_moment(record.start_time),
        ended_at=_moment(record.end_time),
        failure_reason=_failure_reason(instance, run.run_id) if status == "failed" else None,
    )


def leviathan_run_records(instance: dg.DagsterInstance, updated_after: datetime | None = None) -> list:
    filters = dg.RunsFilter(job_name=None, updated_after=updated_after)
    return [r for r in instance.get_run_records(filters=filters) if r.dagster_run.job_name in LEVIATHAN_JOBS]


def _moment(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp else None


def _failure_reason(instance: dg.DagsterInstance, run_id: str) -> str:
    for kind in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE):
        records = instance.get_records_for_run(run_id, of_type=kind, limit=1).records
        if records:
            entry = records[0].event_log_entry
            error = (
                entry.dagster_event.step_failure_data.error
                if kind == dg.DagsterEventType.STEP_FAILURE
                else None
            )
            return (error.message if error else entry.message or "").strip()
    return ""
