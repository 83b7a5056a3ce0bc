import dagster as dg

from leviathan_dagster.defs.backlogs.assets import backlog, task_readiness

REFRESH_JOB = "refresh_backlogs_job"

refresh_backlogs_job = dg.define_asset_job(
    REFRESH_JOB,
    selection=dg.AssetSelection.assets(backlog, task_readiness),
    description="Re-read a target's backlog from its base branch and recompute task readiness.",
)
