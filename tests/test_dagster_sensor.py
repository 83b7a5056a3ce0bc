"""attempt_sensor ticks on a temporary instance: run keys, tags, backoff, exhaustion, broken targets."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from support import Project, backlog_yaml, docs_task, make_project

from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.definitions import build_definitions
from leviathan_dagster.defs.attempts.sensors import attempt_sensor
from leviathan_dagster.defs.platform.resources import LeviathanResource

pytestmark = pytest.mark.dagster


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def tick(project: Project, instance: dg.DagsterInstance, **resource) -> dg.SensorResult:
    leviathan = LeviathanResource(
        config_path=str(project.config_path), home=str(project.home.root), **resource
    )
    context = dg.build_sensor_context(
        instance=instance, instance_ref=instance.get_ref(), resources={"leviathan": leviathan}
    )
    result = attempt_sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def fail_attempt(
    project: Project, task_id: str, number: int, failure_type: str = "tests_failed", ago: float = 0
):
    attempt_id = f"attempt-{task_id}-{number}"
    events = project.events()
    at = utc_now() - timedelta(seconds=ago)
    events.append(
        [
            lifecycle.attempt_created(
                target_id="site",
                task_id=task_id,
                attempt_id=attempt_id,
                attempt_number=number,
                branch_name="b",
                executor="local",
                actor_id="test",
                at=at,
            )
        ]
    )
    failed = lifecycle.attempt_failed(
        attempt_id=attempt_id,
        target_id="site",
        task_id=task_id,
        failure_type=failure_type,
        error_summary="x",
        actor_id="test",
    )
    failed.payload["completed_at"] = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    events.append([failed])


def site(tmp_path: Path, *tasks, **policy) -> Project:
    files = {".leviathan/backlog.yaml": backlog_yaml(*tasks)}
    return make_project(
        tmp_path,
        {"site": {"files": files, "policy": {"max_running_attempts": 2, "max_open_prs": 5, **policy}}},
    )


def test_requests_one_run_per_ready_task_with_run_key_and_tags(tmp_path, instance) -> None:
    project = site(tmp_path, docs_task("a"), docs_task("b", priority=5), docs_task("c", ready=False))
    result = tick(project, instance)
    assert [(r.run_key, r.partition_key) for r in result.run_requests] == [
        ("site/b:1", "site/b"),
        ("site/a:1", "site/a"),
    ]
    assert result.run_requests[0].tags == {
        "leviathan/target": "site",
        "leviathan/task": "b",
        "leviathan/attempt": "1",
    }
    # The partitions its runs need (every task's partition is backlog_sensor's, on a backlog change).
    assert set(instance.get_dynamic_partitions("tasks")) == {"site/a", "site/b"}
    assert instance.get_dynamic_partitions("targets") == ["site"]


def test_backoff_then_retry_with_next_attempt_number(tmp_path, instance) -> None:
    project = site(tmp_path, docs_task("a"), backoff_seconds=60, max_attempts_per_task=3)
    fail_attempt(project, "a", 1, ago=10)
    waiting = tick(project, instance)
    assert not waiting.run_requests and "a (backoff)" in waiting.skip_reason.skip_message

    later = site(tmp_path / "p2", docs_task("a"), backoff_seconds=60, max_attempts_per_task=3)
    fail_attempt(later, "a", 1, ago=61)
    [request] = tick(later, instance).run_requests
    assert request.run_key == "site/a:2" and request.tags["leviathan/attempt"] == "2"


def test_infrastructure_failures_do_not_use_up_attempts(tmp_path, instance) -> None:
    project = site(tmp_path, docs_task("a"), backoff_seconds=0, max_attempts_per_task=1)
    fail_attempt(project, "a", 1, failure_type="infrastructure", ago=1)
    [request] = tick(project, instance).run_requests
    assert request.run_key == "site/a:2"
    fail_attempt(project, "a", 2, ago=1)
    result = tick(project, instance)
    assert not result.run_requests and "a (attempts_exhausted)" in result.skip_reason.skip_message


def test_a_broken_target_is_skipped_with_reason_and_others_still_run(tmp_path, instance) -> None:
    project = make_project(
        tmp_path,
        {
            "good": {"files": {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"))}},
            "broken": {"files": {".leviathan/backlog.yaml": "tasks:\n  - id: x\n    title: [unclosed\n"}},
            "gone": {},  # repo_url points nowhere
        },
    )
    result = tick(project, instance)
    assert [r.run_key for r in result.run_requests] == ["good/a:1"]
    idle = make_project(tmp_path / "idle", {"broken": {"files": {".leviathan/backlog.yaml": "tasks: 3\n"}}})
    skipped = tick(idle, instance)
    assert not skipped.run_requests and "target 'broken' broken" in skipped.skip_reason.skip_message


def test_only_target_and_queued_runs(tmp_path, instance) -> None:
    project = make_project(
        tmp_path,
        {
            "one": {"files": {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"))}},
            "two": {"files": {".leviathan/backlog.yaml": backlog_yaml(docs_task("b"))}},
        },
    )
    assert [r.run_key for r in tick(project, instance, only_target="two").run_requests] == ["two/b:1"]
    # A queued run for one/a (not yet in the event log) keeps the task from being requested again.
    instance.add_run(
        dg.DagsterRun(
            job_name="attempt_job",
            run_id="queued-run",
            status=dg.DagsterRunStatus.NOT_STARTED,
            tags={"leviathan/target": "one", "leviathan/task": "a"},
        )
    )
    assert [r.run_key for r in tick(project, instance).run_requests] == ["two/b:1"]


def test_attempt_schedule_decides_as_the_sensor_does_and_registers_partitions(tmp_path, instance) -> None:
    from leviathan_dagster.defs.attempts.schedules import attempt_schedule

    project = site(tmp_path, docs_task("a"), docs_task("b", priority=5))
    leviathan = LeviathanResource(config_path=str(project.config_path), home=str(project.home.root))
    context = dg.build_schedule_context(instance=instance, resources={"leviathan": leviathan})
    requests = attempt_schedule(context)
    assert [(r.run_key, r.partition_key) for r in requests] == [
        ("site/b:1", "site/b"),
        ("site/a:1", "site/a"),
    ]
    assert sorted(instance.get_dynamic_partitions("tasks")) == ["site/a", "site/b"]
    assert instance.get_dynamic_partitions("targets") == ["site"]
    # The sensor, deciding on the same state, asks for the same runs under the same keys.
    sensor = tick(project, instance)
    assert [r.run_key for r in sensor.run_requests] == [r.run_key for r in requests]


def update_backlog(project: Project, target_id: str, text: str) -> None:
    from leviathan_dagster.core.git import commands as gitutil

    work = project.root / f"work-{target_id}"
    if not work.exists():
        gitutil.clone(str(project.repo(target_id)), work, "main")
    (work / ".leviathan" / "backlog.yaml").write_text(text, encoding="utf-8")
    gitutil.commit_all(work, "edit the backlog")
    gitutil.push(work, "origin", "HEAD:refs/heads/main")


def apply_partitions(instance, result) -> None:
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.DeleteDynamicPartitionsRequest):
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
        else:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def tick_with_cursor(project: Project, instance, cursor: str | None, sensor=attempt_sensor):
    leviathan = LeviathanResource(config_path=str(project.config_path), home=str(project.home.root))
    context = dg.build_sensor_context(
        instance=instance, instance_ref=instance.get_ref(), resources={"leviathan": leviathan}, cursor=cursor
    )
    result = sensor(context)
    if isinstance(result, dg.SensorResult):
        apply_partitions(instance, result)
        return result, result.cursor
    return result, cursor


def test_readiness_is_reported_as_an_asset_event_only_when_it_changes(tmp_path, instance) -> None:
    project = site(tmp_path, docs_task("a", ready=False), docs_task("b", ready=False))
    first, cursor = tick_with_cursor(project, instance, None)
    [readiness] = first.asset_events
    assert readiness.asset_key == dg.AssetKey("task_readiness") and readiness.partition == "site"
    assert readiness.metadata["not_ready"].value == 2 and not first.run_requests
    # Idle: nothing changed, nothing is reported (no run, no asset event, nothing in Leviathan's log).
    idle, cursor = tick_with_cursor(project, instance, cursor)
    assert idle.asset_events == [] and not idle.run_requests and idle.skip_reason
    assert project.events().head()[0] == 0

    # b becomes ready: readiness is reported again, naming the run this very tick requested.
    update_backlog(project, "site", backlog_yaml(docs_task("a", ready=False), docs_task("b")))
    changed, cursor = tick_with_cursor(project, instance, cursor)
    assert [r.run_key for r in changed.run_requests] == ["site/b:1"]
    [readiness] = changed.asset_events
    assert readiness.metadata["requested"].value == ["b"] and readiness.metadata["ready"].value == 1


def test_backlog_sensor_records_a_backlog_only_when_it_changed(tmp_path, instance) -> None:
    from leviathan_dagster.defs.backlogs.sensors import backlog_sensor

    project = site(tmp_path, docs_task("a", ready=False), docs_task("b", ready=False), docs_task("c"))
    first, cursor = tick_with_cursor(project, instance, None, backlog_sensor)
    [run] = first.run_requests  # the backlog asset and its checks, in one run (see backlog_sensor)
    assert (run.partition_key, run.asset_selection) == ("site", [dg.AssetKey("backlog")])
    assert sorted(instance.get_dynamic_partitions("tasks")) == ["site/a", "site/b", "site/c"]
    assert instance.get_dynamic_partitions("targets") == ["site"]
    idle, cursor = tick_with_cursor(project, instance, cursor, backlog_sensor)
    assert "1 backlogs unchanged" in idle.skip_message

    fail_attempt(project, "b", 1)  # b has history; a never had an attempt
    update_backlog(project, "site", backlog_yaml(docs_task("c"), docs_task("d", ready=False)))
    changed, cursor = tick_with_cursor(project, instance, cursor, backlog_sensor)
    assert [r.partition_key for r in changed.run_requests] == ["site"]
    # a is deleted (nothing was ever recorded under its key, so it may come back safely); b keeps its
    # partition, so its attempts stay visible in the UI, and the backlog asset lists it as archived.
    assert sorted(instance.get_dynamic_partitions("tasks")) == ["site/b", "site/c", "site/d"]
    leviathan = LeviathanResource(config_path=str(project.config_path), home=str(project.home.root))
    result = (
        build_definitions(leviathan)
        .resolve_job_def("refresh_backlogs_job")
        .execute_in_process(instance=instance, partition_key="site", asset_selection=[dg.AssetKey("backlog")])
    )
    [materialization] = result.asset_materializations_for_node("backlog")
    assert "site/b" in materialization.metadata["archived_tasks"].value
    assert {e.check_name for e in result.get_asset_check_evaluations()} == {
        "backlog_is_valid",
        "allowed_paths_in_scope",
    }
    # Unchanged backlog: the partitions are not even listed again.
    calls = []
    original = instance.get_dynamic_partitions
    instance.get_dynamic_partitions = lambda name: calls.append(name) or original(name)
    tick_with_cursor(project, instance, cursor, backlog_sensor)
    assert calls == []


def test_a_started_run_that_has_not_recorded_its_attempt_still_holds_the_target(tmp_path, instance) -> None:
    # The gap two daemons can race through: run started, attempt.created not written yet.
    project = site(tmp_path, docs_task("a"), docs_task("b"), max_running_attempts=1)
    instance.add_run(
        dg.DagsterRun(
            job_name="attempt_job",
            run_id="started-run",
            status=dg.DagsterRunStatus.STARTED,
            tags={"leviathan/target": "site", "leviathan/task": "a"},
        )
    )
    result = tick(project, instance)
    assert not result.run_requests
    assert "b (max_running_attempts)" in result.skip_reason.skip_message


def test_an_idle_system_appends_nothing_to_the_audit_log(tmp_path, instance) -> None:
    """Every sensor the daemon runs, ticking over a project with nothing to do: no event, ever."""
    from leviathan_dagster.defs.attempts.pr_sensors import pr_lifecycle_sensor
    from leviathan_dagster.defs.backlogs.sensors import backlog_sensor
    from leviathan_dagster.defs.platform.sensors import run_events_sensor

    project = site(tmp_path, docs_task("a", ready=False))
    cursors: dict[str, str | None] = {}
    for _ in range(2):
        for sensor in (attempt_sensor, backlog_sensor, run_events_sensor, pr_lifecycle_sensor):
            result, cursors[sensor.name] = tick_with_cursor(
                project, instance, cursors.get(sensor.name), sensor
            )
            assert not getattr(result, "run_requests", None) or sensor is backlog_sensor
    assert not project.home.events_path.exists() or project.events().head()[0] == 0


def test_a_backlog_already_recorded_at_its_version_is_not_recorded_again(tmp_path, instance) -> None:
    from leviathan_dagster.defs.backlogs.sensors import backlog_sensor

    project = site(tmp_path, docs_task("a"))
    leviathan = LeviathanResource(config_path=str(project.config_path), home=str(project.home.root))
    instance.add_dynamic_partitions("targets", ["site"])
    build_definitions(leviathan).resolve_job_def("refresh_backlogs_job").execute_in_process(
        instance=instance, partition_key="site", asset_selection=[dg.AssetKey("backlog")]
    )
    # A daemon starting with no cursor: the backlog is known at this version, so no run, but the
    # task partitions are brought in line all the same.
    first, _ = tick_with_cursor(project, instance, None, backlog_sensor)
    assert first.run_requests == []
    assert instance.get_dynamic_partitions("tasks") == ["site/a"]
