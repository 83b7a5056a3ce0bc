"""A task's outcome on its partition: the rules (core/attempts/task_outcome.py) from real event folds, and the
PR lifecycle sensor turning a PR closed unmerged into a failed partition, then reporting a cleared
escalation, through a real instance and the record run."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value
from support import backlog_yaml, docs_task, make_project
from test_pr_lifecycle import attempt_with_pr, local

from leviathan_dagster.core.attempts import ledger as at
from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.attempts.operator import clear_escalation_event
from leviathan_dagster.core.attempts.task_outcome import outcome_updates, task_outcome, touched_tasks
from leviathan_dagster.core.events.model import StoredEvent
from leviathan_dagster.core.models import Policy, TargetConfig
from leviathan_dagster.definitions import build_definitions
from leviathan_dagster.defs.attempts.outcomes import RECORD_OUTCOME_JOB
from leviathan_dagster.defs.attempts.partitions import tasks_partitions
from leviathan_dagster.defs.attempts.pr_sensors import pr_lifecycle_sensor
from leviathan_dagster.defs.platform.resources import LeviathanResource

POLICY = Policy(max_attempts_per_task=3, escalation_after=2, backoff_seconds=60)


def failed(number: int, failure_type: str = "tests_failed", task_id: str = "a") -> list:
    ids = {"target_id": "site", "task_id": task_id, "attempt_id": at.make_attempt_id("site", task_id, number)}
    return [
        lifecycle.attempt_created(
            **ids,
            attempt_number=number,
            branch_name=f"agent/{task_id}-{number}",
            executor="local",
            actor_id="t",
        ),
        lifecycle.attempt_failed(
            **ids, failure_type=failure_type, error_summary="2 tests failed", actor_id="t"
        ),
    ]


def succeeded_with_pr(number: int, pr_number: int) -> list:
    ids = {"target_id": "site", "task_id": "a", "attempt_id": at.make_attempt_id("site", "a", number)}
    return [
        lifecycle.attempt_created(
            **ids, attempt_number=number, branch_name=f"agent/a-{number}", executor="local", actor_id="t"
        ),
        lifecycle.pr_created(
            **ids, pr_number=pr_number, pr_url=f"local://site/pull/{pr_number}", branch_name="b", actor_id="t"
        ),
        lifecycle.attempt_succeeded(**ids, actor_id="t", pr_number=pr_number),
    ]


def closed(pr_number: int, number: int) -> list:
    return [
        lifecycle.pr_finished(
            kind="pr.closed",
            target_id="site",
            pr_number=pr_number,
            task_ref="site/a",
            actor_id="t",
            attempt_id=at.make_attempt_id("site", "a", number),
        )
    ]


def stored(*groups: list) -> list[StoredEvent]:
    """The events in log order, as a store hands them out (the chain's hashes play no part here)."""
    events = [e for group in groups for e in group]
    return [StoredEvent(seq=i, event=e, prev_hash="", hash="", body=b"") for i, e in enumerate(events, 1)]


def ledger_of(*groups: list) -> AttemptLedger:
    return AttemptLedger.from_events(stored(*groups))


def escalated(failures: int) -> list:
    return [lifecycle.task_escalated(target_id="site", task_id="a", failures=failures, actor_id="t")]


def test_a_failed_attempt_is_failed_with_its_type_and_meaning() -> None:
    outcome = task_outcome(ledger_of(failed(1)), POLICY, "site", "a")
    assert outcome.failed and outcome.state == "failed"
    metadata = outcome.as_metadata()
    assert (metadata["failure_type"], metadata["attempt_number"]) == ("tests_failed", 1)
    assert metadata["failure_meaning"] == "the final test run failed"
    assert metadata["error_summary"] == "2 tests failed" and "retried after backoff" in outcome.reason


def test_escalated_and_exhausted_tasks_are_failed_with_the_way_out() -> None:
    outcome = task_outcome(ledger_of(failed(1), failed(2), escalated(2)), POLICY, "site", "a")
    assert (outcome.state, outcome.failure_type) == ("escalated", "tests_failed")
    assert "clear-escalation site a" in outcome.reason
    exhausted = task_outcome(ledger_of(failed(1)), Policy(max_attempts_per_task=1), "site", "a")
    assert (exhausted.state, exhausted.failed) == ("attempts_exhausted", True)


def test_a_pr_closed_unmerged_fails_the_green_partition() -> None:
    ledger = ledger_of(succeeded_with_pr(1, 7))
    assert task_outcome(ledger, POLICY, "site", "a").state == "pr_open"
    ledger = ledger_of(succeeded_with_pr(1, 7), closed(7, 1))
    outcome = task_outcome(ledger, POLICY, "site", "a")
    assert (outcome.state, outcome.failure_type) == ("failed", "pr_closed")
    assert touched_tasks(ledger, stored(closed(7, 1))) == {("site", "a")}
    [update] = outcome_updates(ledger, {"site": POLICY}, {("site", "a")})
    assert update.needs_failed_run  # its attempt's run succeeded: only a failed run turns it red


def test_a_cleared_escalation_is_reported_not_failed() -> None:
    groups = [failed(1), failed(2), escalated(2)]
    target = TargetConfig(id="site", repo_url="/nowhere", policy=POLICY)
    cleared = clear_escalation_event(target, ledger_of(*groups), "a", "alice")
    ledger = ledger_of(*groups, [cleared])
    outcome = task_outcome(ledger, POLICY, "site", "a")
    assert (outcome.state, outcome.failed) == ("escalation_cleared", False)
    assert "attempt 3 runs with a fresh budget" in outcome.reason
    assert touched_tasks(ledger, stored(*groups, [cleared])[-1:]) == {("site", "a")}
    assert touched_tasks(ledger, stored(*groups)[:-1]) == set()  # an attempt's own end: its run shows it
    [update] = outcome_updates(ledger, {"site": POLICY}, {("site", "a")})
    assert not update.needs_failed_run


def test_a_running_or_foreign_task_needs_no_update() -> None:
    running = ledger_of(failed(1)[:1])
    assert outcome_updates(running, {"site": POLICY}, {("site", "a")}) == []
    assert outcome_updates(ledger_of(failed(1)), {}, {("site", "a")}) == []  # target left leviathan.yaml


def failed_partitions(instance: dg.DagsterInstance) -> list[str]:
    value = get_and_update_asset_status_cache_value(
        instance, dg.AssetKey("attempt_outcomes"), tasks_partitions
    )
    return list(value.deserialize_failed_partition_subsets(tasks_partitions).get_partition_keys())


@pytest.mark.dagster
def test_pr_sensor_fails_the_partition_of_a_closed_pr_then_reports_the_cleared_escalation(
    tmp_path: Path,
) -> None:
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("intro"))}
    policy = {"max_attempts_per_task": 1, "backoff_seconds": 0, "circuit_breaker_failures": 5}
    project = make_project(tmp_path, {"site": {"files": files, "policy": policy}})
    attempt_with_pr(project, "intro")
    target, forge = local(project)
    leviathan = LeviathanResource(config_path=str(project.config_path), home=str(project.home.root))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tasks_partitions.name, ["site/intro"])

        def tick(cursor):
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"leviathan": leviathan}
            )
            return pr_lifecycle_sensor(context)

        first = tick(None)  # the PR is open: nothing to show yet
        assert first.run_requests == [] and first.asset_events == []
        forge.close_pull_request(1)  # a reviewer rejects the work on the forge
        second = tick(first.cursor)
        [request] = second.run_requests
        assert (request.partition_key, request.run_key) == ("site/intro", "site/intro:1:outcome")

        job = build_definitions(leviathan).resolve_job_def(RECORD_OUTCOME_JOB)
        result = job.execute_in_process(instance=instance, partition_key="site/intro", raise_on_error=False)
        assert not result.success
        assert failed_partitions(instance) == ["site/intro"]
        [observation] = instance.fetch_observations(dg.AssetKey("attempt_outcomes"), limit=10).records
        metadata = observation.asset_observation.metadata
        assert metadata["failure_type"].value == "pr_closed"
        assert metadata["outcome"].value == "attempts_exhausted"
        ledger = AttemptLedger.from_events(project.events().read())
        assert len(ledger.attempts("site")) == 1  # the record run started no attempt

        project.events().append([clear_escalation_event(target, ledger, "intro", "alice")])
        third = tick(second.cursor)
        assert third.run_requests == []
        [cleared] = third.asset_events
        assert cleared.partition == "site/intro" and cleared.metadata["outcome"].value == "escalation_cleared"
        assert tick(third.cursor).asset_events == []  # an unchanged log reports nothing
