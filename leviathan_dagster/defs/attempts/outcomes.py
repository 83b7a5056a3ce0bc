"""A task's outcome on its ``attempt_outcomes`` partition (the rules: ``core/attempts/task_outcome.py``).

What Dagster 1.13 OSS can show, and so how each outcome is recorded:

- A partition is red (failed) only when the newest run that planned it failed: the OSS storages do
  not store ``ASSET_FAILED_TO_MATERIALIZE`` events (``can_store_asset_failure_events`` is False) and
  the partition status is computed from planned materializations and their runs' status. A failed
  attempt's run is that failed run already; a PR closed unmerged after its attempt's run succeeded
  (green) needs one more: ``record_task_outcome_job``, requested by the PR lifecycle sensor, records
  the outcome and fails on purpose, without starting an attempt.
- The failure type and reason are an ``AssetObservation`` on the partition (the partition's event
  history shows its metadata): logged by the failed run itself, or run-less by the sensor for a
  change no run reflects (an escalation cleared, a PR merged). A run-less asset check evaluation
  was the other candidate; Dagster stores one only once per partition (``asset_check_executions`` is
  unique on (asset, check, run_id, partition) and a run-less one has run_id ""), so a task's second
  change of outcome could never be shown.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from leviathan_dagster.core.attempts.ledger import task_key
from leviathan_dagster.core.attempts.task_outcome import (
    TaskOutcome,
    outcome_updates,
    task_outcome,
    tasks_shown_wrong,
    touched_tasks,
)
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.models import Policy, ProjectConfig
from leviathan_dagster.core.projections.log_view import current_ledger

ATTEMPT_OUTCOMES_KEY = dg.AssetKey("attempt_outcomes")
RECORD_OUTCOME_JOB = "record_task_outcome_job"


def outcome_observation(outcome: TaskOutcome) -> dg.AssetObservation:
    return dg.AssetObservation(
        ATTEMPT_OUTCOMES_KEY,
        partition=task_key(outcome.target_id, outcome.task_id),
        description=outcome.reason,
        metadata=outcome.as_metadata(),
    )


def current_outcome(events: EventStore, policy: Policy, target_id: str, task_id: str) -> TaskOutcome:
    return task_outcome(current_ledger(events), policy, target_id, task_id)


def fail_with_outcome(context: dg.AssetExecutionContext, outcome: TaskOutcome) -> None:
    """In a run of the task's partition: show ``outcome`` on it, and fail the run if it failed (the
    partition turns red). Returns for an outcome that is not a failure."""
    context.log_event(outcome_observation(outcome))
    if outcome.failed:
        raise dg.Failure(
            description=f"{outcome.state} ({outcome.failure_type}): {outcome.reason}",
            metadata=outcome.as_metadata(),
            allow_retries=False,
        )


def policies_of(project: ProjectConfig) -> Mapping[str, Policy]:
    return {t.id: t.policy for t in project.targets}


def outcome_events(
    events: EventStore, project: ProjectConfig, after_seq: int | None
) -> tuple[list[dg.AssetObservation], list[dg.RunRequest], int]:
    """What the partitions need after the log's events past ``after_seq`` (None: a first look, from
    the ledger), and the seq to continue from: observations to report run-less, and record runs
    (one per failed attempt, keyed by it: run keys are permanent, so it is never recorded twice)."""
    ledger = current_ledger(events)
    seq = ledger.last_seq
    if after_seq is None:
        tasks = tasks_shown_wrong(ledger)
    else:
        tasks = touched_tasks(ledger, (e for e in events.read(after_seq) if e.seq <= seq))
    observations, runs = [], []
    for update in outcome_updates(ledger, policies_of(project), tasks):
        outcome, key = update.outcome, task_key(update.outcome.target_id, update.outcome.task_id)
        if update.needs_failed_run:
            number = outcome.attempt.number if outcome.attempt else 0
            runs.append(dg.RunRequest(run_key=f"{key}:{number}:outcome", partition_key=key))
        else:
            observations.append(outcome_observation(outcome))
    return observations, runs, seq
