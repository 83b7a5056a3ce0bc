"""One scheduling decision, shared by ``attempt_sensor`` and ``attempt_schedule`` (and, through the
sensor, ``leviathan run --once``): ``core.attempt_planning.plan_attempt_requests`` under the log view's
lock, its requests turned into Dagster run requests. Every caller decides exactly the same way; they
differ only in what else they report."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.models import ProjectConfig, ResourceRequests
from leviathan_dagster.core.projections.log_view import view_of
from leviathan_dagster.core.scheduling.cycle import CyclePlan
from leviathan_dagster.core.scheduling.planning import AttemptRequest, describe_idle, plan_attempt_requests
from leviathan_dagster.defs.platform.resources import LeviathanResource
from leviathan_dagster.defs.platform.run_view import DagsterRunView

__all__ = ["Decision", "attempt_run_request", "decide", "describe_idle", "run_request_of"]


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
    warnings: list[str] = []
    # Held for the whole decision: another thread of this process (the PR sensor) refreshing the
    # view half-way would make the plan mix two states of the log. Appends go through the view's
    # long-lived store, whose duplicate index is kept across ticks.
    with view.current():
        plan, requests = plan_attempt_requests(
            project,
            leviathan.leviathan_home(),
            view.store,
            utc_now(),
            DagsterRunView(instance),
            only_target=leviathan.only_target,
            warn=warnings.append,
        )
    return Decision(project, plan, [run_request_of(r) for r in requests], warnings)


def run_request_of(request: AttemptRequest) -> dg.RunRequest:
    """The Dagster run request of one planned attempt (key and tags are ``AttemptRequest``'s)."""
    return dg.RunRequest(run_key=request.run_key, partition_key=request.partition_key, tags=request.tags)


def attempt_run_request(
    target_id: str,
    task_id: str,
    attempt_number: int,
    resources: ResourceRequests | None = None,
    *,
    relaunch: int = 0,
) -> dg.RunRequest:
    """The run request of one attempt (key and tags from ``core.attempt_planning.AttemptRequest``)."""
    return run_request_of(AttemptRequest(target_id, task_id, attempt_number, relaunch, resources))
