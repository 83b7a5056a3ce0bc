"""Every attempt and operator run into the event log, exactly once (see core/attempts/run_events.py for why).

One sensor with a cursor over the instance's run records (ordered by their last update) replaces the
run-status sensors and their reconciliation pass: each tick reads the records updated since the
cursor, a page at a time, and appends the run events the log does not hold yet. A daemon that was
down simply catches up from the cursor, and runs that ended before the first tick are found the same
way. What is already recorded is known from this process's log view, so a tick costs what changed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from leviathan_dagster.core.attempts.run_events import record_runs
from leviathan_dagster.core.projections.log_view import view_of
from leviathan_dagster.defs.platform.resources import LeviathanResource
from leviathan_dagster.defs.platform.run_records import PAGE, run_info, run_records_page

# Re-read a little before the cursor: records updated in the same instant as the last one read are
# not lost; the idempotent append (and the view's set of recorded run events) makes the overlap free.
_OVERLAP = timedelta(seconds=1)


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Records attempt and operator runs (started, succeeded, failed, canceled) in the event log, "
        "once each, from the instance's run records after its cursor."
    ),
)
def run_events_sensor(context: dg.SensorEvaluationContext, leviathan: LeviathanResource):
    since = datetime.fromisoformat(context.cursor) - _OVERLAP if context.cursor else None
    records, newest = run_records_page(context.instance, since, PAGE)
    if newest is not None:
        context.update_cursor(newest.astimezone(UTC).isoformat())
    if not records:
        return dg.SkipReason("no attempt or operator run changed")
    view = view_of(leviathan.event_log())
    view.require("index")
    with view.current():
        recorded = view.index.run_event_ids
        # Appends go through the view's own store: its duplicate index is kept across ticks.
        written = record_runs(view.store, [run_info(context.instance, r) for r in records], known=recorded)
    return dg.SkipReason(f"{len(records)} runs checked, {written} run events recorded")
