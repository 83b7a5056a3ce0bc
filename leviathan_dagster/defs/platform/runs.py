"""Questions about Dagster runs that Leviathan's scheduling needs answered."""

import dagster as dg

from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.scheduling.process_liveness import ProcessIdentity, this_process

# Job names live here (not in jobs.py) so assets can name their own job without an import cycle.
ATTEMPT_JOB = "attempt_job"

NOT_YET_STARTED = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING)
ALIVE = (*NOT_YET_STARTED, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)


# Runs executed in-process carry their process's identity (core/scheduling/process_liveness).
PID_TAG = "leviathan/pid"
HOST_TAG = "leviathan/host"
PROCESS_START_TAG = "leviathan/process_start"


def process_tags() -> dict[str, str]:
    """Tags naming this process (pid, host, start time), for runs it executes in-process."""
    me = this_process()
    if me is None:  # no /proc: liveness cannot be checked here, so claim nothing
        return {}
    return {PID_TAG: str(me.pid), HOST_TAG: me.host, PROCESS_START_TAG: me.start}


def run_is_alive(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether the run may still record its attempt. A run whose executing process is known to be gone
    is reported failed to Dagster (so every scheduler agrees) and is not alive."""
    run = instance.get_run_by_id(run_id)
    return run is not None and _still_alive(instance, run)


def _still_alive(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    if run.status not in ALIVE:
        return False
    if _process_gone(run):
        instance.report_run_failed(
            run, f"the process executing it (pid {run.tags[PID_TAG]} on {run.tags[HOST_TAG]}) is gone"
        )
        return False
    return True


def _process_gone(run: dg.DagsterRun) -> bool:
    pid, host, start = run.tags.get(PID_TAG), run.tags.get(HOST_TAG), run.tags.get(PROCESS_START_TAG)
    if not pid or not pid.isdigit() or not host or not start:
        return False  # not executed in-process by a Leviathan command: not ours to judge
    return ProcessIdentity(int(pid), host, start).is_gone() is True


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
        if run.run_id == exclude_run or recorded or not _still_alive(instance, run):
            continue
        target, task = run.tags.get("leviathan/target"), run.tags.get("leviathan/task")
        if target and task:
            queued.setdefault(target, set()).add(task)
    return {target: frozenset(tasks) for target, tasks in queued.items()}
