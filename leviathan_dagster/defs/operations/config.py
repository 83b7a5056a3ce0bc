"""Launchpad config of the operator actions, and who the operator is."""

import dagster as dg
from pydantic import Field

# Tags under which a Dagster deployment may name the user who launched a run (Dagster+ sets
# ``dagster/user``; our own docs suggest ``user`` for OSS launchpads). First found wins.
USER_TAGS = ("dagster/user", "user")


class OperatorConfig(dg.Config):
    operator: str = Field(
        default="",
        description=(
            "Who you are, recorded as the event's actor (operator:<name>). Used only when the run has "
            "no user tag (dagster/user or user)."
        ),
    )
    reason: str = Field(default="", description="Why: kept with the event in the audit log.")


class TargetActionConfig(OperatorConfig):
    target: str = Field(description="Target id from leviathan.yaml, e.g. docs-site.")


class TaskActionConfig(TargetActionConfig):
    task: str = Field(description="Task id from the target's backlog, e.g. write-guide.")


class RunTaskNowConfig(TaskActionConfig):
    executor: str | None = Field(
        default=None, description="Executor for this attempt (local, k8s, k8s-stub); default: the target's."
    )


class CancelAttemptConfig(TaskActionConfig):
    pause_target: bool = Field(
        default=False,
        description=(
            "Also pause the target. A canceled attempt does not count against the task, so without a "
            "pause (or ready: false in the backlog) the scheduler may start the task again."
        ),
    )


def operator_name(context: dg.OpExecutionContext, config: OperatorConfig) -> str:
    tags = context.run.tags
    return next((tags[t] for t in USER_TAGS if tags.get(t)), None) or config.operator
