"""One full loop in Dagster on a temporary instance: sensor -> attempt runs -> PRs -> merge -> dependent."""

from __future__ import annotations

import json
import time
from pathlib import Path

import dagster as dg
import pytest
from support import backlog_yaml, docs_task, make_project

from leviathan_dagster.cli.dagster_cycle import run_cycle
from leviathan_dagster.core.attempts import pr_actions
from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.forge.local import LocalForge
from leviathan_dagster.definitions import build_definitions
from leviathan_dagster.defs.backlogs.jobs import REFRESH_JOB
from leviathan_dagster.defs.platform.resources import LeviathanResource

pytestmark = pytest.mark.dagster


def resource_for(project) -> LeviathanResource:
    return LeviathanResource(config_path=str(project.config_path), home=str(project.home.root))


def test_full_loop_dependency_waits_for_merge(tmp_path: Path) -> None:
    tasks = backlog_yaml(docs_task("a"), docs_task("b", dependencies=["a"]))
    project = make_project(tmp_path, {"site": {"files": {".leviathan/backlog.yaml": tasks}}})
    forge = LocalForge("site", str(project.repo("site")), project.home.root)
    with dg.instance_for_test() as instance:
        first = run_cycle(instance, resource_for(project), echo=lambda _: None)
        assert [(key, ok) for key, _, ok in first.launched] == [("site/a:1", True)]
        [pr] = forge.list_pull_requests("open")

        # b waits for a's PR to be merged, even with a free slot.
        idle = run_cycle(instance, resource_for(project), echo=lambda _: None)
        assert idle.launched == [] and "b (dependency)" in idle.skipped

        pr_actions.merge_pull_request(project.target("site"), forge, pr.number, project.events())
        second = run_cycle(instance, resource_for(project), echo=lambda _: None)
        assert [key for key, _, _ in second.launched] == ["site/b:1"]

        run = instance.get_run_by_id(first.launched[0][1])
        assert run.tags["leviathan/task"] == "a" and run.tags["dagster/run_key"] == "site/a:1"
        materialization = instance.get_latest_materialization_event(dg.AssetKey("attempt_outcomes"))
        metadata = materialization.asset_materialization.metadata
        assert materialization.asset_materialization.partition == "site/b"
        # A link a browser opens: the local forge's PR record (the file exists), and how to see it.
        record = Path(metadata["pr_url"].value.removeprefix("file://"))
        assert metadata["pr_url"].value.startswith("file:///") and record.is_file()
        assert json.loads(record.read_text())["head"] == metadata["branch"].value
        assert (
            metadata["pr_show"].value
            == f"leviathan prs show {metadata['pr_number'].value} --target site --patch"
        )
        assert Path(metadata["diff_url"].value.removeprefix("file://")).name == "diff.patch"
        # A deterministic generator's cost: zero, not absent, typed so Dagster plots it.
        assert metadata["generator"].value == "docs"
        assert isinstance(metadata["cost_usd"], dg.FloatMetadataValue) and metadata["cost_usd"].value == 0.0
        for name in (
            "model_calls",
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "total_tokens",
        ):
            assert isinstance(metadata[name], dg.IntMetadataValue) and metadata[name].value == 0
        assert metadata["branch"].value.startswith("agent/b-attempt-")
        # Besides the attempts, a run of the backlog asset each time the backlog changed: its first
        # sight, and the merge's write-back (a completed); the idle cycle recorded nothing. Readiness is
        # the sensor's run-less asset event, never a refresh run's.
        runs = instance.get_runs()
        assert sorted(r.job_name for r in runs if r.job_name != "attempt_job") == [REFRESH_JOB] * 2
        assert all(r.asset_selection == {dg.AssetKey("backlog")} for r in runs if r.job_name == REFRESH_JOB)
        readiness = instance.get_latest_materialization_event(dg.AssetKey("task_readiness"))
        assert readiness.run_id == "" and readiness.asset_materialization.partition == "site"
        assert metadata["attempt_number"].value == 1

    ledger = AttemptLedger.from_events(project.events().read())
    assert [a.status for a in ledger.attempts("site")] == ["succeeded", "succeeded"]
    assert project.events().verify().ok


def test_failed_attempt_fails_the_run_with_failure_metadata(tmp_path: Path) -> None:
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"))}
    project = make_project(tmp_path, {"site": {"files": files, "test_command": ["false"]}})
    with dg.instance_for_test() as instance:
        report = run_cycle(instance, resource_for(project), echo=lambda _: None)
        [(key, run_id, ok)] = report.launched
        assert key == "site/a:1" and not ok
        failures = [
            e
            for e in instance.all_logs(run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"
        ]
        assert len(failures) == 1  # a real failure is not retried inside the run
        failure = failures[0].dagster_event.step_failure_data
        assert "tests_failed" in failure.error.message
        # A failed attempt carries its cost too: zero for the docs generator, not absent.
        metadata = failure.user_failure_data.metadata
        assert metadata["generator"].value == "docs" and metadata["cost_usd"].value == 0.0
        assert metadata["total_tokens"].value == 0 and metadata["model_calls"].value == 0


def test_invalid_backlog_fails_the_asset_check(tmp_path: Path) -> None:
    bad = "tasks:\n  - id: a\n    title: A\n    ready: maybe\n    allowed_paths: []\n"
    project = make_project(tmp_path, {"site": {"files": {".leviathan/backlog.yaml": bad}}})
    defs = build_definitions(resource_for(project))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("targets", ["site"])
        result = defs.resolve_job_def(REFRESH_JOB).execute_in_process(
            instance=instance, partition_key="site", raise_on_error=False
        )
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        evaluation = checks["backlog_is_valid"]
        assert not evaluation.passed and not checks["allowed_paths_in_scope"].passed
        assert "ready" in evaluation.metadata["error"].value
        # The readiness step fails with the reason; the backlog itself was still recorded.
        assert not result.success


def test_launched_run_keeps_its_slot_when_a_higher_priority_task_becomes_ready(tmp_path: Path) -> None:
    """The demo's race: the sensor gave the slot to "low" while "high" was in backoff; the backoff ends
    before low's run re-checks. The run must not be refused for a slot nobody else is using."""
    files = {
        ".leviathan/backlog.yaml": backlog_yaml(docs_task("low", priority=1), docs_task("high", priority=5))
    }
    project = make_project(tmp_path, {"site": {"files": files, "policy": {"max_running_attempts": 1}}})
    job = build_definitions(resource_for(project)).resolve_job_def("attempt_job")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tasks", ["site/low", "site/high"])
        result = job.execute_in_process(instance=instance, partition_key="site/low", raise_on_error=False)
        assert result.success
    [attempt] = AttemptLedger.from_events(project.events().read()).attempts("site")
    assert (attempt.task_id, attempt.status) == ("low", "succeeded")


def test_a_run_refused_at_run_time_does_not_spend_the_tasks_turn(tmp_path: Path) -> None:
    """A run refused by the run-time re-check creates no attempt; its run_key is spent (Dagster never
    reuses one), so the next request for that attempt number needs a new key or the task would wait
    forever."""
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"), docs_task("b"))}
    project = make_project(tmp_path, {"site": {"files": files, "policy": {"max_open_prs": 1}}})
    forge = LocalForge("site", str(project.repo("site")), project.home.root)
    job = build_definitions(resource_for(project)).resolve_job_def("attempt_job")
    quiet = lambda _: None  # noqa: E731
    with dg.instance_for_test() as instance:
        assert [key for key, _, _ in run_cycle(instance, resource_for(project), echo=quiet).launched] == [
            "site/a:1"
        ]
        # A second scheduler, deciding on a stale snapshot, launched b:1; the run refuses (a's PR is open).
        if not instance.has_dynamic_partition("tasks", "site/b"):
            instance.add_dynamic_partitions("tasks", ["site/b"])  # that scheduler registered it
        tags = {"leviathan/target": "site", "leviathan/task": "b", "leviathan/attempt": "1"}
        stale = job.execute_in_process(
            instance=instance,
            partition_key="site/b",
            tags={**tags, "dagster/run_key": "site/b:1"},
            raise_on_error=False,
        )
        assert not stale.success
        [pr] = forge.list_pull_requests("open")
        pr_actions.merge_pull_request(project.target("site"), forge, pr.number, project.events())
        after = run_cycle(instance, resource_for(project), echo=quiet)
        assert [(key, ok) for key, _, ok in after.launched] == [("site/b:1+1", True)]
    attempts = AttemptLedger.from_events(project.events().read()).attempts("site")
    assert [(a.task_id, a.number, a.status) for a in attempts] == [
        ("a", 1, "succeeded"),
        ("b", 1, "succeeded"),
    ]


def test_attempt_run_rechecks_policy_at_run_time(tmp_path: Path) -> None:
    """A run requested on a stale snapshot (another run opened a PR since) creates no attempt."""
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"), docs_task("b"))}
    project = make_project(tmp_path, {"site": {"files": files, "policy": {"max_open_prs": 1}}})
    defs = build_definitions(resource_for(project))
    job = defs.resolve_job_def("attempt_job")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tasks", ["site/a", "site/b"])
        assert job.execute_in_process(instance=instance, partition_key="site/a", raise_on_error=False).success
        stale = job.execute_in_process(instance=instance, partition_key="site/b", raise_on_error=False)
        assert not stale.success
        failure = next(e for e in stale.all_events if e.event_type_value == "STEP_FAILURE")
        assert "not attempted: max_open_prs" in failure.step_failure_data.error.message
    ledger = AttemptLedger.from_events(project.events().read())
    assert [a.task_id for a in ledger.attempts("site")] == ["a"]


def test_a_cycle_submits_to_the_run_queue_and_honours_its_limits(tmp_path: Path) -> None:
    """run --once is not a second scheduler: its runs pass through the instance's queue (enqueued,
    dequeued by the coordinator under the instance's limits), never executed in process."""
    targets = {
        name: {"files": {".leviathan/backlog.yaml": backlog_yaml(docs_task(f"{name}-a"))}}
        for name in ("one", "two")
    }
    project = make_project(tmp_path, targets)
    overrides = {"concurrency": {"runs": {"max_concurrent_runs": 1}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        report = run_cycle(instance, resource_for(project), echo=lambda _: None)
        assert sorted((key, ok) for key, _, ok in report.launched) == [
            ("one/one-a:1", True),
            ("two/two-a:1", True),
        ]
        records = instance.get_run_records(
            dg.RunsFilter(run_ids=[run_id for _, run_id, _ in report.launched])
        )
        for record in records:
            kinds = {
                e.dagster_event.event_type
                for e in instance.all_logs(record.dagster_run.run_id)
                if e.dagster_event
            }
            assert {dg.DagsterEventType.RUN_ENQUEUED, dg.DagsterEventType.RUN_STARTING} <= kinds
        # max_concurrent_runs: 1 held: the two attempt runs never overlapped.
        first, second = sorted(records, key=lambda r: r.start_time)
        assert first.end_time <= second.start_time


def test_the_cli_leaves_the_queue_to_a_live_daemon(tmp_path: Path) -> None:
    """Two dequeuers could race past a limit: with a live queued-run-coordinator heartbeat in the
    instance, the CLI only waits; without one (the embedded demo) it dequeues itself."""
    from dagster._daemon.types import DaemonHeartbeat

    from leviathan_dagster.cli.run_queue import RunQueue

    with dg.instance_for_test() as instance:
        queue = RunQueue(instance, config_path="unused", home="unused")  # not entered: no code server
        assert not queue.daemon_dequeues()
        beat = DaemonHeartbeat(time.time(), "QUEUED_RUN_COORDINATOR", "daemon-1", errors=[])
        instance.add_daemon_heartbeat(beat)
        assert queue.daemon_dequeues()
        instance.add_daemon_heartbeat(beat._replace(timestamp=time.time() - 3600))  # a dead daemon
        assert not queue.daemon_dequeues()
