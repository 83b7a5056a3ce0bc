"""A run executed in-process whose process was killed (a `leviathan run --once` killed with its worker)
is dead, not STARTED forever: Dagster is told it failed and its attempt can be reconciled. Real
processes, a real SQLite-backed Dagster instance."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from leviathan_dagster.defs.platform.runs import run_is_alive

CHILD = r"""
import sys, time
from pathlib import Path
import dagster as dg
from leviathan_dagster.defs.platform.runs import process_tags

@dg.op
def hang() -> None:
    Path(sys.argv[2]).write_text("started")
    time.sleep(300)

@dg.job
def hanging():
    hang()

with dg.DagsterInstance.get() as instance:  # DAGSTER_HOME
    hanging.execute_in_process(instance=instance, tags=process_tags())
"""


def start_hanging_run(home: Path, marker: Path) -> subprocess.Popen:
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home), str(marker)], env=env, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the child run did not start"
        time.sleep(0.05)
    return proc


@pytest.mark.dagster
def test_a_run_whose_process_was_killed_is_failed_not_started_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    killed = start_hanging_run(home, tmp_path / "one")
    living = start_hanging_run(home, tmp_path / "two")
    try:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(10)
        instance = dg.DagsterInstance.get()
        runs = {run.tags["leviathan/pid"]: run for run in instance.get_runs()}
        dead, alive = runs[str(killed.pid)], runs[str(living.pid)]
        assert dead.status == alive.status == dg.DagsterRunStatus.STARTED  # what Dagster believed
        assert run_is_alive(instance, alive.run_id)
        assert not run_is_alive(instance, dead.run_id)
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
    finally:
        for proc in (killed, living):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
