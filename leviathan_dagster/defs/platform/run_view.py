"""Dagster's run storage answering the planning API's questions (``core.attempt_planning.RunView``)."""

import dagster as dg

from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.scheduling.planning import ATTEMPT_TAG, TARGET_TAG, TASK_TAG
from leviathan_dagster.defs.platform.runs import ATTEMPT_JOB, queued_tasks_by_target, run_is_alive

_ENDED = [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


class DagsterRunView:
    """The attempt runs of one Dagster instance, as the planning API sees them."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self._instance = instance

    def is_alive(self, run_id: str) -> bool:
        return run_is_alive(self._instance, run_id)

    def live_unrecorded_tasks(
        self, ledger: AttemptLedger, exclude_run: str | None = None
    ) -> dict[str, frozenset[str]]:
        return queued_tasks_by_target(self._instance, ATTEMPT_JOB, ledger, exclude_run=exclude_run)

    def ended_run_ids(self, target_id: str, task_id: str, attempt_number: int) -> list[str]:
        tags = {TARGET_TAG: target_id, TASK_TAG: task_id, ATTEMPT_TAG: str(attempt_number)}
        filters = dg.RunsFilter(job_name=ATTEMPT_JOB, statuses=_ENDED, tags=tags)
        return [run.run_id for run in self._instance.get_runs(filters=filters)]
