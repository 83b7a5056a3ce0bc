"""One scheduling decision, shared by ``attempt_sensor`` and ``attempt_schedule``: reconcile lost
attempts, plan the cycle (``core.scheduling.plan_cycle``), and turn the selected tasks into run
requests. Both callers decide exactly the same way; they differ only in what else they report."""

from __future__ import annotations

import json
from dataclasses import dataclass

import dagster as dg

from leviathan_dagster.core.attempt_runner import reconcile_lost_attempts
from leviathan_dagster.core.attempts import AttemptLedger, task_key
from leviathan_dagster.core.config_kubernetes import task_resources
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.executors.k8s_job import container_resources
from leviathan_dagster.core.models import ProjectConfig, ResourceRequests
from leviathan_dagster.core.projections.log_view import view_of
from leviathan_dagster.core.scheduling import CyclePlan, plan_cycle
from leviathan_dagster.defs.platform.resources import LeviathanResource
from leviathan_dagster.defs.platform.runs import ATTEMPT_JOB, queued_tasks_by_target, run_is_alive


@dataclass
class Decision:
    project: ProjectConfig
    plan: CyclePlan
    run_requests: list[dg.RunRequest]
    warnings: list[str]


def decide(instance: dg.DagsterInstance, leviathan: LeviathanResource) -> Decision:
    """Raises ConfigError when leviathan.yaml is invalid."""
    project = leviathan.project()
    view = view_of(leviathan.event_log())
    # Appends go through the view's long-lived store, whose duplicate index is kept across ticks.
    events = view.store
    # Held for the whole decision: another thread of this process (the PR sensor) refreshing the
    # view half-way would make the plan mix two states of the log.
    view.require("ledger")
    with view.current():
        reconcile_lost_attempts(view.ledger, lambda r: run_is_alive(instance, r), events)
        view.refresh()
        ledger = view.ledger
        plan = plan_cycle(
            project,
            leviathan.leviathan_home(),
            events,
            utc_now(),
            queued=queued_tasks_by_target(instance, ATTEMPT_JOB, ledger),
            only_target=leviathan.only_target,
        )
        warnings = [f"target '{t}' skipped: {e}" for t, e in plan.errors.items()]
        requests = []
        for ready in plan.selected:
            resources, warning = _resources(plan, ready)
            if warning:
                warnings.append(warning)
            number = ready.next_attempt_number
            relaunch = _refused_runs(instance, ledger, ready.target_id, ready.task_id, number)
            requests.append(
                attempt_run_request(
                    ready.target_id, ready.task_id, ready.next_attempt_number, resources, relaunch=relaunch
                )
            )
    return Decision(project, plan, requests, warnings)


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


def describe_idle(plan: CyclePlan) -> str:
    parts = [f"target '{t}' broken: {e.splitlines()[0]}" for t, e in sorted(plan.errors.items())]
    for target_id, snap in sorted(plan.snapshots.items()):
        waiting = [f"{r.task_id} ({r.reason})" for r in snap.readiness if r.reason not in ("status",)]
        if waiting:
            parts.append(f"{target_id}: " + ", ".join(waiting[:10]))
    return "no task ready. " + "; ".join(parts) if parts else "no task ready"


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
    return sum(ledger.attempt_of_run(run.run_id) is None for run in runs)


def _resources(plan: CyclePlan, ready) -> tuple[ResourceRequests | None, str | None]:
    """The task's own ``resources`` (backlog), else its target's ``resources:`` section."""
    snap = plan.snapshots[ready.target_id]
    task = snap.backlog.get(ready.task_id) if snap.backlog else None
    try:
        own = task_resources(task.extra, ready.task_id) if task is not None else None
    except ConfigError as exc:
        return snap.target.resources, f"target '{ready.target_id}': {exc}; using the target's resources"
    return own or snap.target.resources, None
