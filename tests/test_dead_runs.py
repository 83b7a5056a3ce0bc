"""A run executed in-process whose process was killed (a `leviathan run --once` killed with its worker)
is dead, not STARTED forever: Dagster is told it failed and its attempt can be reconciled. Real
processes, a real SQLite-backed Dagster instance."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from support import backlog_yaml, docs_task, make_project

from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
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


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), whatever session it started for itself."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.dagster
def test_a_killed_run_once_with_its_worker_leaves_no_task_in_progress(tmp_path: Path) -> None:
    # The fault: `run --once` killed together with its worker left the task in_progress
    # forever (its Dagster run stayed STARTED). The next cycle must see the run is dead, settle the
    # attempt (infrastructure: not counted) and carry on.
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"))}
    hang = [sys.executable, "-c", "import time; time.sleep(300)"]
    policy = {"backoff_seconds": 0}
    project = make_project(tmp_path, {"site": {"files": files, "test_command": hang, "policy": policy}})
    args = [sys.executable, "-m", "leviathan_dagster.cli", "--config", str(project.config_path)]
    args += ["--home", str(project.home.root)]
    cycle = subprocess.Popen([*args, "run", "--once"], start_new_session=True, stdout=subprocess.DEVNULL)
    log_path = project.home.events_path
    deadline = time.monotonic() + 120
    try:
        while not (log_path.exists() and b"attempt.started" in log_path.read_bytes()):
            assert cycle.poll() is None and time.monotonic() < deadline, "the attempt did not start"
            time.sleep(0.1)
    finally:
        for pid in [*descendants(cycle.pid), cycle.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        cycle.wait(10)
    [first] = AttemptLedger.from_events(NdjsonEventLog(log_path).read()).attempts()
    assert first.in_flight  # what the killed cycle left behind
    # The operator fixes the hanging test command and runs the next cycle.
    project.config_path.write_text(project.config_path.read_text().replace("time.sleep(300)", "pass"))
    again = subprocess.run([*args, "run", "--once", "--json"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    ledger = AttemptLedger.from_events(NdjsonEventLog(log_path).read())
    settled = ledger.attempt(first.attempt_id)
    assert (settled.status, settled.failure_type) == ("failed", "infrastructure")
    assert [a.status for a in ledger.attempts() if a.attempt_id != first.attempt_id] == ["succeeded"]
    assert not any(a.in_flight for a in ledger.attempts())
