"""Dagster's run records, mapped once into Leviathan's ``RunInfo`` (no Dagster types past here)."""

from datetime import UTC, datetime

import dagster as dg

from leviathan_dagster.core.attempts.run_events import RunInfo

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
# Only attempt and operator runs are recorded (a shared instance may run other code locations too).
# Reads that poll (the on-demand backlog refresh, metrics, the log's own check) are not audit facts:
# recording them made the system's own polling most of its audit log.
LEVIATHAN_JOBS = (
    "attempt_job",
    "run_task_now_job",
    "cancel_attempt_job",
    "reset_circuit_breaker_job",
    "pause_target_job",
    "resume_target_job",
)
# At most this many run records are read per call: a backlog of finished runs is worked off over
# several ticks instead of one unbounded query.
PAGE = 200


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


def leviathan_run_records(
    instance: dg.DagsterInstance, updated_after: datetime | None = None, limit: int | None = None
) -> list:
    """Records of Leviathan's recorded jobs updated after ``updated_after``, oldest update first."""
    return run_records_page(instance, updated_after, limit)[0]


def run_records_page(
    instance: dg.DagsterInstance, updated_after: datetime | None, limit: int | None
) -> tuple[list, datetime | None]:
    """(records of Leviathan's recorded jobs, newest update time of the whole page): a cursor must move
    past a page of other jobs' runs too, or it would stop there for good."""
    filters = dg.RunsFilter(job_name=None, updated_after=updated_after)
    records = instance.get_run_records(
        filters=filters, limit=limit, order_by="update_timestamp", ascending=True
    )
    newest = max((r.update_timestamp for r in records), default=None)
    return [r for r in records if r.dagster_run.job_name in LEVIATHAN_JOBS], newest


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
