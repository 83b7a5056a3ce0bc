import dagster as dg

from leviathan_dagster.defs.backlogs.assets import backlog, task_readiness

REFRESH_JOB = "refresh_backlogs_job"

refresh_backlogs_job = dg.define_asset_job(
    REFRESH_JOB,
    selection=dg.AssetSelection.assets(backlog, task_readiness),
    description=(
        "On demand: re-read a target's backlog and recompute its readiness now. Nothing schedules it: "
        "attempt_sensor reports both as asset events whenever they change."
    ),
)
