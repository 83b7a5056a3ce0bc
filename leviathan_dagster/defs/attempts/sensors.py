"""The scheduling sensor: every tick, one Leviathan scheduler cycle over all targets."""

import dagster as dg

from leviathan_dagster.core.attempt_planning import AttemptRequest, describe_idle, plan_attempt_requests
from leviathan_dagster.core.attempts import task_key
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.models import ResourceRequests
from leviathan_dagster.core.scheduling import CyclePlan
from leviathan_dagster.defs.attempts.jobs import attempt_job
from leviathan_dagster.defs.attempts.partitions import tasks_partitions
from leviathan_dagster.defs.backlogs.partitions import targets_partitions
from leviathan_dagster.defs.platform.resources import LeviathanResource
from leviathan_dagster.defs.platform.run_view import DagsterRunView


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
    instance = context.instance
    # The one planning API (shared with run --once, the run-time re-check and run-now).
    plan, requests = plan_attempt_requests(
        project,
        leviathan.leviathan_home(),
        leviathan.event_log(),
        utc_now(),
        DagsterRunView(instance),
        only_target=leviathan.only_target,
        warn=context.log.warning,
    )
    partition_requests = _partition_requests(instance, project.targets, plan)
    run_requests = [_run_request(request) for request in requests]
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
    """The run request of one attempt (key and tags from ``core.attempt_planning.AttemptRequest``)."""
    return _run_request(AttemptRequest(target_id, task_id, attempt_number, relaunch, resources))


def _run_request(request: AttemptRequest) -> dg.RunRequest:
    return dg.RunRequest(run_key=request.run_key, partition_key=request.partition_key, tags=request.tags)


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
