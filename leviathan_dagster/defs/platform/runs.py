"""Questions about Dagster runs that Leviathan's scheduling needs answered."""

import os
import socket
from pathlib import Path

import dagster as dg

from leviathan_dagster.core.attempts import AttemptLedger

# Job names live here (not in jobs.py) so assets can name their own job without an import cycle.
ATTEMPT_JOB = "attempt_job"

NOT_YET_STARTED = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING)
ALIVE = (*NOT_YET_STARTED, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)


# A run executed in-process (``leviathan run --once``) has no run launcher and no run monitoring: if
# its process is killed, Dagster keeps it STARTED forever and its task waits for it forever. So such
# runs carry the identity of the process executing them, and a run whose process is gone is dead.
PID_TAG = "leviathan/pid"
HOST_TAG = "leviathan/host"
PROCESS_START_TAG = "leviathan/process_start"


def process_tags() -> dict[str, str]:
    """Tags naming this process (pid, host, start time), for runs it executes in-process."""
    start = process_start(os.getpid())
    if start is None:  # no /proc: liveness cannot be checked here, so claim nothing
        return {}
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(), PROCESS_START_TAG: start}


def process_start(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (field 22 of /proc/<pid>/stat), or None if it is gone.
    Compared along with the pid, so a recycled pid is not mistaken for the original process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # after the comm field, which may hold spaces


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
    pid, host = run.tags.get(PID_TAG), run.tags.get(HOST_TAG)
    if not pid or not pid.isdigit() or host != socket.gethostname() or not Path("/proc/self/stat").exists():
        return False  # not ours to judge: another machine's process, or no /proc here
    return process_start(int(pid)) != run.tags.get(PROCESS_START_TAG)


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
