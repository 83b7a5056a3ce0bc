"""Questions about Dagster runs that Leviathan's scheduling needs answered."""

import dagster as dg

from leviathan_dagster.core.attempts import AttemptLedger

# Job names live here (not in jobs.py) so assets can name their own job without an import cycle.
ATTEMPT_JOB = "attempt_job"

NOT_YET_STARTED = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING)
ALIVE = (*NOT_YET_STARTED, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)


def run_is_alive(instance: dg.DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is not None and run.status in ALIVE


def queued_tasks_by_target(
    instance: dg.DagsterInstance,
    job_name: str,
    ledger: AttemptLedger | None = None,
    exclude_run: str | None = None,
) -> dict[str, frozenset[str]]:
    """Tasks whose attempt run is alive but whose attempt is not in the event log yet.

    That covers queued runs *and* runs that started but have not written ``attempt.created``: without
    the latter, a second scheduler (another daemon, the CLI) ticking in that gap would see the target
    idle and start another task beyond ``max_running_attempts`` / ``max_open_prs``.
    """
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=list(ALIVE)))
    queued: dict[str, set[str]] = {}
    for run in runs:
        recorded = ledger is not None and ledger.attempt_of_run(run.run_id) is not None
        if run.run_id == exclude_run or recorded:
            continue
        target, task = run.tags.get("leviathan/target"), run.tags.get("leviathan/task")
        if target and task:
            queued.setdefault(target, set()).add(task)
    return {target: frozenset(tasks) for target, tasks in queued.items()}
