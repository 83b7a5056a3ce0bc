import dagster as dg

from leviathan_dagster.defs.attempts.assets import attempt_outcomes
from leviathan_dagster.defs.attempts.outcomes import RECORD_OUTCOME_JOB
from leviathan_dagster.defs.platform.runs import ATTEMPT_JOB

attempt_job = dg.define_asset_job(
    ATTEMPT_JOB,
    selection=dg.AssetSelection.assets(attempt_outcomes),
    description="Run one attempt at one task (partition <target>/<task>); launched by attempt_sensor.",
)

record_outcome_job = dg.define_asset_job(
    RECORD_OUTCOME_JOB,
    selection=dg.AssetSelection.assets(attempt_outcomes),
    config={"ops": {"attempt_outcomes": {"config": {"record_outcome": True}}}},
    description=(
        "Record a task's outcome on its partition without starting an attempt; fails (the partition "
        "turns red) when the task failed. Launched by pr_lifecycle_sensor for a PR closed unmerged."
    ),
)
