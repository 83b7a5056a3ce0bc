"""Operator actions as Dagster jobs on a temporary instance: run-now opens a real PR inside policy,
pause/resume/reset land in the log with the operator's identity, cancel ends a queued attempt's run,
and the delivery assets compute from the log."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from support import backlog_yaml, docs_task, make_project

from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.forge.local import LocalForge
from leviathan_dagster.definitions import build_definitions
from leviathan_dagster.defs.platform.resources import LeviathanResource

pytestmark = pytest.mark.dagster


@pytest.fixture
def setup(tmp_path: Path):
    # The queued run coordinator, as in dagster.yaml: canceling a queued run is its job.
    tasks = backlog_yaml(docs_task("a"), docs_task("wide", allowed_paths=["src/x.py"]))
    project = make_project(tmp_path, {"site": {"files": {".leviathan/backlog.yaml": tasks}}})
    resource = LeviathanResource(config_path=str(project.config_path), home=str(project.home.root))
    coordinator = {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}
    with dg.instance_for_test(overrides={"run_coordinator": coordinator}) as instance:
        yield project, build_definitions(resource), instance


def launch(defs, instance, job: str, op: str, tags=None, **config):
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, run_config={"ops": {op: {"config": config}}}, tags=tags, raise_on_error=False
    )


def test_run_task_now_opens_a_pr_and_materializes_the_task_partition(setup) -> None:
    project, defs, instance = setup
    result = launch(
        defs, instance, "run_task_now_job", "run_task_now", tags={"user": "alice"}, target="site", task="a"
    )
    assert result.success
    [pr] = LocalForge("site", str(project.repo("site")), project.home.root).list_pull_requests("open")
    event = instance.get_latest_materialization_event(dg.AssetKey("attempt_outcomes"))
    metadata = event.asset_materialization.metadata
    assert event.asset_materialization.partition == "site/a"
    assert metadata["pr_url"].value == pr.url
    assert metadata["requested_by"].value == "operator:alice"
    assert metadata["diff_stat"].value.startswith("1 files, +")
    assert "docs/a.md" in metadata["touched_paths"].value
    events = list(project.events().read())
    [request] = [e for e in events if e.event_type == "operator.run_now"]
    assert request.event.actor_id == "operator:alice" and request.payload["task_id"] == "a"
    # Policy still holds: the PR is open, so a second run-now is refused and starts nothing.
    again = launch(defs, instance, "run_task_now_job", "run_task_now", target="site", task="a")
    assert not again.success
    assert "open_pr" in again.failure_data_for_node("run_task_now").error.message
    assert len(AttemptLedger.from_events(project.events().read()).attempts("site")) == 1
    # A task whose paths leave the target's prefixes is refused too.
    wide = launch(defs, instance, "run_task_now_job", "run_task_now", target="site", task="wide")
    assert "out_of_scope" in wide.failure_data_for_node("run_task_now").error.message


def test_pause_resume_and_reset_are_recorded_with_the_operator(setup) -> None:
    project, defs, instance = setup
    assert launch(
        defs, instance, "pause_target_job", "pause_target", target="site", operator="bob", reason="x"
    ).success
    paused = launch(defs, instance, "run_task_now_job", "run_task_now", target="site", task="a")
    assert "paused" in paused.failure_data_for_node("run_task_now").error.message
    assert launch(defs, instance, "resume_target_job", "resume_target", target="site").success
    assert launch(defs, instance, "reset_circuit_breaker_job", "reset_circuit_breaker", target="site").success
    events = [(e.event_type, e.event.actor_id) for e in project.events().read()]
    assert events == [
        ("target.paused", "operator:bob"),
        ("target.resumed", "operator:unknown"),
        ("circuit.reset", "operator:unknown"),
    ]
    unknown = launch(defs, instance, "pause_target_job", "pause_target", target="nope")
    assert "no target 'nope'" in unknown.failure_data_for_node("pause_target").error.message


def test_cancel_attempt_cancels_its_queued_run_and_ends_the_attempt(setup) -> None:
    project, defs, instance = setup
    # An attempt run created but not launched yet: canceling it marks it canceled.
    run = instance.create_run_for_job(
        defs.resolve_job_def("refresh_backlogs_job"), tags={"leviathan/task": "a"}
    )
    project.events().append(
        [
            lifecycle.attempt_created(
                target_id="site",
                task_id="a",
                attempt_id="attempt-x",
                attempt_number=1,
                branch_name="b",
                executor="local",
                actor_id="t",
                run_id=run.run_id,
            )
        ]
    )
    result = launch(
        defs, instance, "cancel_attempt_job", "cancel_attempt", target="site", task="a", pause_target=True
    )
    assert result.success
    ledger = AttemptLedger.from_events(project.events().read())
    record = ledger.attempt("attempt-x")
    assert (record.status, record.failure_type) == ("failed", "infrastructure")
    assert record.error_summary == "canceled by operator:unknown"
    assert ledger.target("site").paused_by == "operator:unknown"
    assert [e.event_type for e in project.events().read()][-3:] == [
        "attempt.cancel_requested",
        "attempt.failed",
        "target.paused",
    ]
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED
    nothing = launch(defs, instance, "cancel_attempt_job", "cancel_attempt", target="site", task="a")
    assert "no attempt in flight" in nothing.failure_data_for_node("cancel_attempt").error.message


def test_delivery_metrics_and_event_log_check(setup) -> None:
    project, defs, instance = setup
    assert launch(defs, instance, "run_task_now_job", "run_task_now", target="site", task="a").success
    today = utc_now().date().isoformat()
    result = defs.resolve_job_def("delivery_metrics_job").execute_in_process(
        instance=instance, partition_key=today
    )
    [mat] = result.asset_materializations_for_node("delivery_metrics")
    assert mat.metadata["metrics"].value["site"]["prs_opened"] == 1
    assert mat.metadata["attempts"].value == 1
    log_run = defs.resolve_job_def("event_log_job").execute_in_process(instance=instance)
    [check] = log_run.get_asset_check_evaluations()
    assert check.passed and check.check_name == "event_log_verifies"


def test_backlog_check_names_tasks_outside_the_target_prefixes(setup) -> None:
    _, defs, instance = setup
    instance.add_dynamic_partitions("targets", ["site"])
    result = defs.resolve_job_def("refresh_backlogs_job").execute_in_process(
        instance=instance, partition_key="site"
    )
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["backlog_is_valid"].passed
    scope = checks["allowed_paths_in_scope"]
    assert not scope.passed and "| wide | src/x.py |" in scope.metadata["outside"].value


def test_clear_escalation_job_records_the_operator_and_frees_the_task(setup) -> None:
    project, defs, instance = setup
    nothing = launch(defs, instance, "clear_escalation_job", "clear_escalation", target="site", task="a")
    assert "nothing to clear" in nothing.failure_data_for_node("clear_escalation").error.message
    ids = {"target_id": "site", "task_id": "a", "attempt_id": "attempt-x"}
    project.events().append(
        [
            lifecycle.attempt_created(
                **ids, attempt_number=1, branch_name="b", executor="local", actor_id="t"
            ),
            lifecycle.attempt_failed(**ids, failure_type="tests_failed", error_summary="x", actor_id="t"),
            lifecycle.task_escalated(target_id="site", task_id="a", failures=1, actor_id="t"),
        ]
    )
    refused = launch(defs, instance, "run_task_now_job", "run_task_now", target="site", task="a")
    assert "escalated" in refused.failure_data_for_node("run_task_now").error.message
    cleared = launch(
        defs,
        instance,
        "clear_escalation_job",
        "clear_escalation",
        tags={"user": "carol"},
        target="site",
        task="a",
        reason="criteria fixed",
    )
    assert cleared.success
    [event] = [e for e in project.events().read() if e.event_type == "task.escalation_cleared"]
    assert (event.event.actor_id, event.payload["reason"]) == ("operator:carol", "criteria fixed")
    history = AttemptLedger.from_events(project.events().read()).task("site", "a")
    assert not history.escalated and history.counted_attempts == 0 and history.next_number == 2


def test_run_now_is_a_materialization_of_the_task_partition_with_config(setup) -> None:
    """The Dagster way to run a task now: materialize its partition of attempt_outcomes with
    run_now: true (the attempt job, its retry policy, the queue when launched from the UI)."""
    project, defs, instance = setup
    instance.add_dynamic_partitions("tasks", ["site/a", "site/wide"])
    run_now = {"ops": {"attempt_outcomes": {"config": {"run_now": True, "reason": "hotfix"}}}}
    job = defs.resolve_job_def("attempt_job")
    result = job.execute_in_process(
        instance=instance,
        partition_key="site/a",
        run_config=run_now,
        tags={"user": "ada"},
        raise_on_error=False,
    )
    assert result.success
    [mat] = result.asset_materializations_for_node("attempt_outcomes")
    assert mat.partition == "site/a" and mat.metadata["requested_by"].value == "operator:ada"
    [request] = [e for e in project.events().read() if e.event_type == "operator.run_now"]
    assert (request.event.actor_id, request.payload["reason"]) == ("operator:ada", "hotfix")
    wide = job.execute_in_process(
        instance=instance, partition_key="site/wide", run_config=run_now, raise_on_error=False
    )
    assert "cannot run now: out_of_scope" in wide.failure_data_for_node("attempt_outcomes").error.message
