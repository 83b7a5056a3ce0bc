"""Every Leviathan run lands in the event log exactly once: sensors, reconciliation, repeats."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from support import backlog_yaml, docs_task, make_project

from leviathan_dagster.cli.dagster_cycle import run_cycle
from leviathan_dagster.core.attempts.run_events import RunInfo, events_for_run, record_runs
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.definitions import build_definitions
from leviathan_dagster.defs.platform.resources import LeviathanResource
from leviathan_dagster.defs.platform.sensors import run_events_sensor

pytestmark = pytest.mark.dagster


def run_event_counts(log) -> Counter:
    return Counter((e.payload["run_id"], e.event_type) for e in log.read() if e.event_type.startswith("run."))


def test_run_events_have_stable_ids_and_repeat_as_no_ops(tmp_path: Path) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    run = RunInfo("r1", "attempt_job", "failed", "site/a", {"leviathan/task": "a"}, at, at, "boom")
    first, second = events_for_run(run), events_for_run(run)
    assert [e.event_type for e in first] == ["run.started", "run.failed"]
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert first[1].payload["failure_reason"] == "boom" and first[1].payload["partition"] == "site/a"
    log = NdjsonEventLog(tmp_path / "events.ndjson")
    assert record_runs(log, [run]) == 2
    assert record_runs(NdjsonEventLog(tmp_path / "events.ndjson"), [run, run]) == 0  # after a "restart" too
    assert log.head()[0] == 2


def sensor_tick(instance, leviathan, cursor=None):
    context = dg.build_sensor_context(instance=instance, resources={"leviathan": leviathan}, cursor=cursor)
    return context, run_events_sensor(context)


def test_cycle_runs_recorded_once_and_the_sensor_adds_nothing_more(tmp_path: Path) -> None:
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"), docs_task("b"))}
    project = make_project(tmp_path, {"site": {"files": files, "test_command": ["false"]}})
    leviathan = LeviathanResource(config_path=str(project.config_path), home=str(project.home.root))
    with dg.instance_for_test() as instance:
        report = run_cycle(instance, leviathan, echo=lambda _: None)
        counts = run_event_counts(project.events())
        runs = {run_id for run_id, _ in counts}
        assert runs == {run_id for _, run_id, _ in report.launched}  # attempt runs only: no refresh runs
        assert all(n == 1 for n in counts.values())
        [(_, attempt_run, ok)] = report.launched
        assert not ok and counts[(attempt_run, "run.failed")] == 1
        failed = next(e for e in project.events().read() if e.event_type == "run.failed")
        assert "tests_failed" in failed.payload["failure_reason"]
        assert failed.payload["tags"]["leviathan/task"] == "a"

        before = project.events().head()[0]
        context, result = sensor_tick(instance, leviathan)
        assert "0 run events recorded" in result.skip_message
        assert context.cursor is not None
        # Nothing changed since the cursor: the next tick reads at most the cursor's overlap, writes nothing.
        _, idle = sensor_tick(instance, leviathan, context.cursor)
        assert "0 run events recorded" in idle.skip_message or "no attempt" in idle.skip_message
        assert project.events().head()[0] == before


def test_the_sensor_back_fills_runs_it_never_saw_and_skips_other_jobs(tmp_path: Path) -> None:
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"))}
    project = make_project(tmp_path, {"site": {"files": files}})
    leviathan = LeviathanResource(config_path=str(project.config_path), home=str(project.home.root))
    with dg.instance_for_test() as instance:
        run_cycle(instance, leviathan, echo=lambda _: None)
        expected = run_event_counts(project.events())
        # A polling run (a backlog refresh) is not an audit fact: never recorded.
        defs = build_definitions(leviathan)
        defs.resolve_job_def("refresh_backlogs_job").execute_in_process(
            instance=instance, partition_key="site", raise_on_error=False
        )
        # A log that never saw these runs (the sensor was down): the cursor-less tick fills it in.
        project.home.events_path.unlink()
        Path(f"{project.home.events_path}.meta.json").unlink()
        context, _ = sensor_tick(instance, leviathan)
        assert run_event_counts(project.events()) == expected
        assert context.cursor is not None
