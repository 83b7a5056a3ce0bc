"""Which attempts to request, under which run key, and the last check before one starts: one API.

The scheduling sensor, the cron schedule, ``leviathan run --once`` (through the sensor), the attempt
run's run-time re-check and an operator's run-now all decide through these functions, so they can
never disagree about what is ready, how a run is keyed or what a task may use. What they need to
know about the orchestrator's runs comes through ``RunView`` (``defs/platform/run_view.py`` answers
it from Dagster's run storage); nothing here imports Dagster.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from leviathan_dagster.core.attempts.ledger import AttemptLedger, task_key
from leviathan_dagster.core.attempts.runner import reconcile_lost_attempts, recovery_for
from leviathan_dagster.core.config.kubernetes import task_resources
from leviathan_dagster.core.errors import ConfigError, NotFoundError, PolicyViolation
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.executors.k8s.job import container_resources
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import ProjectConfig, ResourceRequests, TargetConfig
from leviathan_dagster.core.projections.log_view import current_ledger
from leviathan_dagster.core.scheduling.cycle import CyclePlan, TargetSnapshot, plan_cycle, snapshot_target
from leviathan_dagster.core.scheduling.readiness import Readiness, count_running, evaluate_launched_task

Warn = Callable[[str], None]
# Run tags every attempt run carries: what the UI filters by and what RunView reads back.
TARGET_TAG, TASK_TAG, ATTEMPT_TAG = "leviathan/target", "leviathan/task", "leviathan/attempt"
K8S_CONFIG_TAG = "dagster-k8s/config"


class RunView(Protocol):
    """What planning needs to know about the orchestrator's attempt runs."""

    def is_alive(self, run_id: str) -> bool:
        """Whether the run is queued, starting or running."""

    def live_unrecorded_tasks(
        self, ledger: AttemptLedger, exclude_run: str | None = None
    ) -> dict[str, frozenset[str]]:
        """Per target, tasks whose attempt run is alive but not in the log yet (queued or starting)."""

    def ended_run_ids(self, target_id: str, task_id: str, attempt_number: int) -> list[str]:
        """Runs for that attempt number that ended (failed or canceled)."""


class NotAttempted(PolicyViolation):
    """The last check before an attempt starts said no: ``reason`` and ``detail`` as in readiness."""

    def __init__(self, message: str, reason: str, detail: str) -> None:
        super().__init__(message)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class AttemptRequest:
    """One attempt run to request: the run key scheme and tags live here, nowhere else.

    ``relaunch``: how many runs for this attempt number ended without creating it (refused by the
    run-time re-check, canceled while queued). Their run keys are spent (an orchestrator never reuses
    one), so the next request is keyed ``<target>/<task>:<attempt>+<relaunch>``; every scheduler counts
    the same runs, so two of them still agree on one key.
    """

    target_id: str
    task_id: str
    attempt_number: int
    relaunch: int = 0
    resources: ResourceRequests | None = None

    @property
    def partition_key(self) -> str:
        return task_key(self.target_id, self.task_id)

    @property
    def run_key(self) -> str:
        # Run-key de-duplication is permanent: the attempt number makes each attempt a new key.
        return f"{self.partition_key}:{self.attempt_number}" + (f"+{self.relaunch}" if self.relaunch else "")

    @property
    def tags(self) -> dict[str, str]:
        tags = {TARGET_TAG: self.target_id, TASK_TAG: self.task_id, ATTEMPT_TAG: str(self.attempt_number)}
        if self.resources:
            # Per-attempt CPU/memory reach the run's pod under K8sRunLauncher (deep-merged into its
            # config); other run launchers ignore the tag.
            k8s = {"container_config": {"resources": container_resources(self.resources)}}
            tags[K8S_CONFIG_TAG] = json.dumps(k8s, sort_keys=True)
        return tags


def plan_attempt_requests(
    project: ProjectConfig,
    home: LeviathanHome,
    events: EventStore,
    now: datetime,
    runs: RunView,
    *,
    only_target: str | None = None,
    warn: Warn = lambda _: None,
) -> tuple[CyclePlan, list[AttemptRequest]]:
    """One scheduler decision: reconcile lost attempts, plan the cycle, key a request per selection."""
    torn = events.torn_tail()
    if torn is not None:  # reported here, repaired (never cut) by the next append
        warn(f"event log: {torn.describe()}")
    # A lost attempt's PR is looked for on its forge first (the worker may have opened it unrecorded).
    recover = recovery_for({t.id: t for t in project.targets}, home)
    settled = reconcile_lost_attempts(current_ledger(events), runs.is_alive, events, recover)
    if settled:  # their ends are stamped after ``now``: judge the backoff they start from then on
        now = max(now, utc_now())
    plan = plan_readiness(project, home, events, now, runs, only_target=only_target)
    for target_id, error in plan.errors.items():
        warn(f"target '{target_id}' skipped: {error}")
    requests = [
        AttemptRequest(
            r.target_id,
            r.task_id,
            r.next_attempt_number,
            relaunch=refused_runs(runs, plan.ledger, r.target_id, r.task_id, r.next_attempt_number),
            resources=resources_for(plan.snapshots[r.target_id], r.task_id, warn),
        )
        for r in plan.selected
    ]
    return plan, requests


def plan_readiness(
    project: ProjectConfig,
    home: LeviathanHome,
    events: EventStore,
    now: datetime,
    runs: RunView | None,
    *,
    only_target: str | None = None,
) -> CyclePlan:
    """Every task's readiness as the scheduler judges it, writing nothing: the log, the backlogs, the
    forge, and the attempt runs that are alive but not in the log yet (queued, or unable to record
    their ``attempt.created``, e.g. on a full disk). ``leviathan tasks`` shows exactly this, so it can
    never say ``ready`` where the scheduler waits on a run (``in_progress``). ``runs`` None: a home
    where no orchestrator ever ran, so no run can be waiting."""
    queued = runs.live_unrecorded_tasks(current_ledger(events)) if runs is not None else {}
    return plan_cycle(project, home, events, now, queued=queued, only_target=only_target)


def refused_runs(runs: RunView, ledger: AttemptLedger, target_id: str, task_id: str, number: int) -> int:
    """Ended runs for attempt ``number`` of the task that never created it."""
    made = {a.run_id for a in ledger.attempts(target_id) if a.task_id == task_id}
    return sum(run_id not in made for run_id in runs.ended_run_ids(target_id, task_id, number))


def resources_for(
    snapshot: TargetSnapshot, task_id: str, warn: Warn = lambda _: None
) -> ResourceRequests | None:
    """The task's own ``resources`` (backlog), else its target's ``resources:`` section."""
    task = snapshot.backlog.get(task_id) if snapshot.backlog else None
    try:
        own = task_resources(task.extra, task_id) if task is not None else None
    except ConfigError as exc:
        warn(f"target '{snapshot.target.id}': {exc}; using the target's resources")
        own = None
    return own or snapshot.target.resources


def describe_idle(plan: CyclePlan) -> str:
    """Why nothing was requested, for a sensor's skip reason and the CLI."""
    parts = [f"target '{t}' broken: {e.splitlines()[0]}" for t, e in sorted(plan.errors.items())]
    for target_id, snap in sorted(plan.snapshots.items()):
        waiting = [f"{r.task_id} ({r.reason})" for r in snap.readiness if r.reason not in ("status",)]
        if waiting:
            parts.append(f"{target_id}: " + ", ".join(waiting[:10]))
    return "no task ready. " + "; ".join(parts) if parts else "no task ready"


def recheck_before_attempt(
    target: TargetConfig,
    home: LeviathanHome,
    ledger: AttemptLedger,
    now: datetime,
    runs: RunView,
    *,
    task_id: str,
    run_id: str,
    global_limit: tuple[int, Sequence[str]] | None = None,
    forgive_streak: bool = False,
) -> Readiness:
    """The last word before anything is created: the task's readiness again, at run time.

    The scheduler decided on a snapshot; by the time this run starts, another run may have opened a PR
    or taken the target's last slot (two daemons, the CLI, a run queued for long). The task is judged
    as ``evaluate_launched_task`` says: alone (this run already holds the slot it was given, so a
    higher-priority task that became ready since must not push it out), and past a retry's backoff
    (the scheduler's decision to wait, which a re-launched run or an operator's run-now skips).

    ``global_limit`` (run-now: ``max_concurrent_attempts`` and every target id of the project) adds
    the limit the scheduler's selection applies otherwise; ``forgive_streak`` (run-now too) releases a
    task held by an infrastructure streak. Raises NotAttempted with the reason, and
    NotFoundError when the task is not in the backlog.
    """
    queued_by_target = runs.live_unrecorded_tasks(ledger, exclude_run=run_id)
    queued = queued_by_target.get(target.id, frozenset())
    snap = snapshot_target(target, home, ledger, now, queued_tasks=queued)
    if not snap.ok:
        raise NotAttempted(f"target '{target.id}': {snap.error}", "target_broken", snap.error or "")
    if snap.backlog.get(task_id) is None:
        known = ", ".join(t.id for t in snap.backlog.tasks) or "none"
        raise NotFoundError(f"target '{target.id}' has no task '{task_id}' in its backlog (tasks: {known})")
    max_concurrent, running = None, 0
    if global_limit is not None:
        max_concurrent, target_ids = global_limit
        running = sum(count_running(ledger, t, queued_by_target.get(t, frozenset())) for t in target_ids)
    verdict = evaluate_launched_task(
        target,
        snap.backlog,
        ledger,
        snap.open_prs,
        now,
        task_id=task_id,
        queued_tasks=queued,
        max_concurrent=max_concurrent,
        running_total=running,
        forgive_streak=forgive_streak,
    )
    if not verdict.ready:
        raise NotAttempted(
            f"{target.id}/{task_id} not attempted: {verdict.reason}: {verdict.detail}",
            verdict.reason,
            verdict.detail,
        )
    return verdict
