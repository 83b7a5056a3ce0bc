"""The production path under the real Dagster daemon: sensor tick -> queued run -> run worker ->
attempt -> PR in the local forge -> run events in the log. No in-process shortcuts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import REPO_ROOT, backlog_yaml, docs_task, make_project

from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.forge.local import LocalForge

pytestmark = pytest.mark.dagster
DEADLINE_SECONDS = 120


def test_daemon_launches_attempt_runs_that_open_prs_and_are_recorded(tmp_path: Path) -> None:
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"), docs_task("b", dependencies=["a"]))}
    project = make_project(tmp_path / "project", {"site": {"files": files}})
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copy(REPO_ROOT / "leviathan_dagster" / "instance" / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "LEVIATHAN_CONFIG": str(project.config_path),
        "LEVIATHAN_HOME": str(project.home.root),
    }
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(REPO_ROOT / "workspace.yaml")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    forge = LocalForge("site", str(project.repo("site")), project.home.root)
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            types = (
                {e.event_type for e in project.events().read()}
                if project.home.events_path.exists()
                else set()
            )
            if forge.list_pull_requests("open") and {"attempt.succeeded", "run.succeeded"} <= types:
                break
            time.sleep(1)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=30)

    [pr] = forge.list_pull_requests("open")
    assert pr.head.startswith("agent/a-attempt-")
    events = list(project.events().read())
    ledger = AttemptLedger.from_events(events)
    [attempt] = ledger.attempts("site")
    assert (attempt.task_id, attempt.status, attempt.pr_number) == ("a", "succeeded", pr.number)
    # b waits for a's PR: it was never attempted.
    assert ledger.task("site", "b").attempts == []
    run_events = [e for e in events if e.event_type == "run.succeeded" and e.payload["job"] == "attempt_job"]
    assert [e.payload["run_id"] for e in run_events] == [attempt.run_id]
    assert project.events().verify().ok
