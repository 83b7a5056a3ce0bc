"""``leviathan run --once`` without a daemon records what the daemon's sensors would: the ``backlog``
asset when a backlog changed, ``task_readiness`` only when readiness changed, judged from cursors
kept in the home across commands (cli/sensor_ticks.py runs the sensors' own change rule)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner
from support import Project, backlog_yaml, docs_task, make_project

from leviathan_dagster.cli.main import cli
from leviathan_dagster.cli.sensor_ticks import CURSORS_FILE
from leviathan_dagster.core.git import commands as gitutil
from leviathan_dagster.core.models import BACKLOG_PATH

pytestmark = pytest.mark.dagster


def run_once(project: Project) -> dict:
    result = CliRunner().invoke(
        cli,
        ["--config", str(project.config_path), "--home", str(project.home.root), "run", "--once", "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def commit_backlog(project: Project, text: str) -> None:
    """A human edits the backlog on the target's base branch."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        gitutil.run_git(["clone", "-q", str(project.repo("site")), str(work)])
        (work / BACKLOG_PATH).write_text(text, encoding="utf-8")
        gitutil.commit_all(work, "edit the backlog")
        gitutil.push(work, "origin", "HEAD:refs/heads/main")


def recorded(project: Project) -> dict[str, list]:
    """The backlog and task_readiness events in the home's Dagster instance, oldest first."""
    with dg.DagsterInstance.from_config(str(project.home.dagster_home)) as instance:
        return {
            name: [
                r.asset_materialization
                for r in instance.fetch_materializations(dg.AssetKey(name), limit=100, ascending=True).records
            ]
            for name in ("backlog", "task_readiness")
        }


def test_run_once_records_backlog_and_readiness_only_when_they_change(tmp_path: Path) -> None:
    # A task that waits for a human: the cycles request no attempt, so only the two assets can change.
    waiting = docs_task("a", ready=False)
    project = make_project(tmp_path, {"site": {"files": {".leviathan/backlog.yaml": backlog_yaml(waiting)}}})

    assert run_once(project)["attempts"] == []
    first = recorded(project)
    assert [m.partition for m in first["backlog"]] == ["site"]  # recorded by a run of its asset
    assert [m.partition for m in first["task_readiness"]] == ["site"]
    assert (project.home.dagster_home / CURSORS_FILE).exists()

    run_once(project)  # nothing changed: nothing recorded, though this is a new command
    assert {name: len(events) for name, events in recorded(project).items()} == {
        "backlog": 1,
        "task_readiness": 1,
    }

    commit_backlog(project, backlog_yaml(waiting, docs_task("b", ready=False)))
    run_once(project)
    after = recorded(project)
    assert len(after["backlog"]) == 2 and after["backlog"][-1].metadata["tasks"].value == 2
    assert len(after["task_readiness"]) == 2  # b is a new verdict
    readiness = after["task_readiness"][-1].metadata
    assert readiness["decision"].value == "attempt_sensor requested nothing: 2 not_ready"
    assert readiness["decided_at"].value  # the decision's clock, as the sensor judged it


def test_a_reset_instance_forgets_the_cursors_too(tmp_path: Path) -> None:
    """``<home>/dagster`` removed (``demo --reset``): the new instance is filled again on the next cycle."""
    waiting = docs_task("a", ready=False)
    project = make_project(tmp_path, {"site": {"files": {".leviathan/backlog.yaml": backlog_yaml(waiting)}}})
    run_once(project)
    from leviathan_dagster.cli.dagster_cycle import reset_dagster_home

    reset_dagster_home(project.home)
    run_once(project)
    assert {name: len(events) for name, events in recorded(project).items()} == {
        "backlog": 1,
        "task_readiness": 1,
    }
