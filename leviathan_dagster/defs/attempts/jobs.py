import dagster as dg

from leviathan_dagster.defs.attempts.assets import attempt_outcomes
from leviathan_dagster.defs.platform.runs import ATTEMPT_JOB

attempt_job = dg.define_asset_job(
    ATTEMPT_JOB,
    selection=dg.AssetSelection.assets(attempt_outcomes),
    description="Run one attempt at one task (partition <target>/<task>); launched by attempt_sensor.",
)
