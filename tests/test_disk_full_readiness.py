"""With the home's disk full, the scheduler and ``leviathan tasks`` read the same state (issue 11).

The full disk is real: the Leviathan home is a tiny tmpfs filled to the last byte, so every write under
it fails with ENOSPC. An attempt run was queued before the disk filled and could never record its
``attempt.created``: the scheduler waits on it (``in_progress``), and ``tasks`` must say so too, not
``ready`` (it used to read only the log and the backlogs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from support import Project, backlog_yaml, docs_task, make_project

from leviathan_dagster.cli.dagster_cycle import prepare_instance
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.scheduling.planning import AttemptRequest, plan_attempt_requests
from leviathan_dagster.core.scheduling.readiness import IN_PROGRESS
from leviathan_dagster.defs.attempts.jobs import ATTEMPT_JOB
from leviathan_dagster.defs.platform.run_view import DagsterRunView


@pytest.fixture
def tiny_home(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs (a real full disk) needs root")
    home = tmp_path / "project" / "home"
    home.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(home)], check=True)
    try:
        yield home
    finally:
        subprocess.run(["umount", "-l", str(home)], check=True)


def _fill(directory: Path) -> None:
    """Write until the filesystem refuses: ENOSPC from here on for every write under it."""
    with (directory / "filler").open("wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 1024 * 1024)
                filler.flush()
        except OSError as exc:
            assert exc.errno == 28, exc  # ENOSPC
    with pytest.raises(OSError, match="No space left"):
        (directory / "probe").write_bytes(b"\0" * 65536)


def _queued_attempt_run(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """An attempt run for site/intro queued in the instance ``leviathan run`` uses, as the scheduler
    requests it (its run key and tags), whose attempt is not in the log."""
    for name in ("DAGSTER_HOME", "LEVIATHAN_HOME", "LEVIATHAN_CONFIG"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # prepare_instance sets them: restored after
    request = AttemptRequest("site", "intro", 1)
    instance = prepare_instance(project.home, project.config_path)
    try:
        instance.add_run(
            dg.DagsterRun(
                job_name=ATTEMPT_JOB,
                run_id=str(uuid.uuid4()),
                status=dg.DagsterRunStatus.NOT_STARTED,
                tags={**request.tags, "dagster/run_key": request.run_key},
            )
        )
    finally:
        instance.dispose()


def _scheduler_readiness(project: Project) -> tuple[dict[str, str], list[str]]:
    """The scheduler's decision (the attempt sensor's and run --once's planning API): reasons by task,
    and the tasks it would request."""
    instance = dg.DagsterInstance.from_config(str(project.home.dagster_home))
    try:
        plan, requests = plan_attempt_requests(
            load_project_config(project.config_path),
            project.home,
            project.events(),
            utc_now(),
            DagsterRunView(instance),
        )
    finally:
        instance.dispose()
    return {r.task_id: r.reason for r in plan.snapshots["site"].readiness}, [r.task_id for r in requests]


def _cli(project: Project, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "leviathan_dagster.cli", "--config", str(project.config_path)]
    command += ["--home", str(project.home.root), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.dagster
def test_the_scheduler_and_tasks_agree_before_and_on_a_full_disk(
    tiny_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("intro"), docs_task("other"))}
    project = make_project(tmp_path / "project", {"site": {"files": files}})
    _queued_attempt_run(project, monkeypatch)

    scheduler, requested = _scheduler_readiness(project)
    assert (scheduler["intro"], requested) == (IN_PROGRESS, [])  # its run holds the slot
    shown = _cli(project, "tasks", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = {row["task"]: row for row in json.loads(shown.stdout)["site"]["tasks"]}
    assert {task: row["reason"] for task, row in rows.items()} == scheduler
    assert rows["intro"]["detail"] == "attempt 1 is queued"

    # The disk fills. Neither can read the runs any more (SQLite cannot even open its database):
    # both say so in one line, and neither calls the task ready.
    _fill(tiny_home)
    for args in (("tasks",), ("run", "--once")):
        failed = _cli(project, *args)
        assert failed.returncode == 2, (args, failed.stdout, failed.stderr)
        [line] = failed.stderr.splitlines()
        assert line.startswith("error: ") and "Fix: " in line and "Traceback" not in failed.stderr, line
        assert "ready" not in failed.stdout
