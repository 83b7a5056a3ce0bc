"""The scheduling sensor: every tick, one Leviathan scheduler cycle over all targets."""

import json

import dagster as dg

from leviathan_dagster.core.attempt_runner import reconcile_lost_attempts, recovery_for
from leviathan_dagster.core.attempts import AttemptLedger, task_key
from leviathan_dagster.core.config_kubernetes import task_resources
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.executors.k8s_job import container_resources
from leviathan_dagster.core.models import ResourceRequests
from leviathan_dagster.core.scheduling import CyclePlan, plan_cycle
from leviathan_dagster.defs.attempts.jobs import ATTEMPT_JOB, attempt_job
from leviathan_dagster.defs.attempts.partitions import tasks_partitions
from leviathan_dagster.defs.backlogs.partitions import targets_partitions
from leviathan_dagster.defs.platform.resources import LeviathanResource
from leviathan_dagster.defs.platform.runs import queued_tasks_by_target, run_is_alive


@dg.sensor(
    job=attempt_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Leviathan's scheduler: reads every target's backlog, computes readiness under policy and "
        "requests one attempt run per ready task (run_key <target>/<task>:<attempt>)."
    ),
)
def attempt_sensor(context: dg.SensorEvaluationContext, leviathan: LeviathanResource):
    try:
        project = leviathan.project()
    except ConfigError as exc:
        return dg.SkipReason(f"leviathan.yaml is invalid: {exc}")
    events = leviathan.event_log()
    torn = events.torn_tail()
    if torn is not None:  # reported here, repaired (never cut) by the next append
        context.log.warning(f"event log: {torn.describe()}")
    instance = context.instance
    reconcile_lost_attempts(
        AttemptLedger.from_events(events.read()),
        lambda r: run_is_alive(instance, r),
        events,
        recovery_for({t.id: t for t in project.targets}, leviathan.leviathan_home()),
    )
    ledger = AttemptLedger.from_events(events.read())
    plan = plan_cycle(
        project,
        leviathan.leviathan_home(),
        events,
        utc_now(),
        queued=queued_tasks_by_target(instance, ATTEMPT_JOB, ledger),
        only_target=leviathan.only_target,
    )
    for target_id, error in plan.errors.items():
        context.log.warning(f"target '{target_id}' skipped: {error}")
    partition_requests = _partition_requests(instance, project.targets, plan)
    run_requests = [
        attempt_run_request(
            r.target_id,
            r.task_id,
            r.next_attempt_number,
            _resources(context, plan, r),
            relaunch=_refused_runs(instance, ledger, r.target_id, r.task_id, r.next_attempt_number),
        )
        for r in plan.selected
    ]
    if run_requests:
        return dg.SensorResult(run_requests=run_requests, dynamic_partitions_requests=partition_requests)
    return dg.SensorResult(dynamic_partitions_requests=partition_requests, skip_reason=describe_idle(plan))


def attempt_run_request(
    target_id: str,
    task_id: str,
    attempt_number: int,
    resources: ResourceRequests | None = None,
    *,
    relaunch: int = 0,
) -> dg.RunRequest:
    """``relaunch``: how many runs for this attempt number ended without creating the attempt (refused
    by the run-time re-check, cancelled while queued). Their run_keys are spent, so the next request
    gets ``<target>/<task>:<attempt>+<relaunch>``; every scheduler counts the same runs, so two daemons
    still agree on one key."""
    key = task_key(target_id, task_id)
    # Per-attempt CPU/memory reach the run's pod under K8sRunLauncher (deep-merged into its config);
    # other run launchers ignore the tag.
    k8s = {"container_config": {"resources": container_resources(resources)}} if resources else None
    return dg.RunRequest(
        # run_key de-duplication is permanent per sensor: the attempt number makes each attempt new.
        run_key=f"{key}:{attempt_number}" + (f"+{relaunch}" if relaunch else ""),
        partition_key=key,
        tags={
            "leviathan/target": target_id,
            "leviathan/task": task_id,
            "leviathan/attempt": str(attempt_number),
            **({"dagster-k8s/config": json.dumps(k8s, sort_keys=True)} if k8s else {}),
        },
    )


def _refused_runs(
    instance: dg.DagsterInstance, ledger: AttemptLedger, target_id: str, task_id: str, number: int
) -> int:
    """Finished runs for attempt ``number`` of the task that never created it."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            job_name=ATTEMPT_JOB,
            statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
            tags={"leviathan/target": target_id, "leviathan/task": task_id, "leviathan/attempt": str(number)},
        )
    )
    made_attempts = {a.run_id for a in ledger.attempts(target_id) if a.task_id == task_id}
    return sum(run.run_id not in made_attempts for run in runs)


def _resources(context: dg.SensorEvaluationContext, plan: CyclePlan, ready) -> ResourceRequests | None:
    """The task's own ``resources`` (backlog), else its target's ``resources:`` section."""
    snap = plan.snapshots[ready.target_id]
    task = snap.backlog.get(ready.task_id) if snap.backlog else None
    try:
        own = task_resources(task.extra, ready.task_id) if task is not None else None
    except ConfigError as exc:
        context.log.warning(f"target '{ready.target_id}': {exc}; using the target's resources")
        own = None
    return own or snap.target.resources


def describe_idle(plan: CyclePlan) -> str:
    parts = [f"target '{t}' broken: {e.splitlines()[0]}" for t, e in sorted(plan.errors.items())]
    for target_id, snap in sorted(plan.snapshots.items()):
        waiting = [f"{r.task_id} ({r.reason})" for r in snap.readiness if r.reason not in ("status",)]
        if waiting:
            parts.append(f"{target_id}: " + ", ".join(waiting[:10]))
    return "no task ready. " + "; ".join(parts) if parts else "no task ready"


def _partition_requests(instance: dg.DagsterInstance, targets, plan: CyclePlan) -> list:
    requests = []
    known_targets = set(instance.get_dynamic_partitions(targets_partitions.name))
    new_targets = [t.id for t in targets if t.id not in known_targets]
    if new_targets:
        requests.append(targets_partitions.build_add_request(new_targets))
    known_tasks = set(instance.get_dynamic_partitions(tasks_partitions.name))
    new_tasks = [
        task_key(tid, task.id)
        for tid, snap in plan.snapshots.items()
        if snap.backlog is not None
        for task in snap.backlog.tasks
        if task_key(tid, task.id) not in known_tasks
    ]
    if new_tasks:
        requests.append(tasks_partitions.build_add_request(new_tasks))
    return requests
