"""``leviathan run --interval N`` and signals, for real: the command in a subprocess, real SIGINT/SIGTERM.

The first signal starts nothing new, settles the attempt in flight (canceled, recorded, its worker and
test command gone), prints one line and exits 0; a second signal stops at once (128 + signal)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import Project, backlog_yaml, docs_task, make_project

from leviathan_dagster.core.attempts.ledger import AttemptLedger

pytestmark = pytest.mark.dagster

# A test command that is still running when the signal comes, named so no other process matches it.
MARKER = "leviathan_signal_test_sleep = 271828"
SLOW_TESTS = [sys.executable, "-c", f"import time; {MARKER}; time.sleep(120)"]


def start_run(project: Project, tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "run.out"
    command = [sys.executable, "-m", "leviathan_dagster.cli", "--config", str(project.config_path)]
    command += ["--home", str(project.home.root), "run", "--interval", "2", *args]
    with out.open("wb") as sink:  # a file, not a pipe: nothing blocks on a full buffer
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    return proc, out


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def marker_processes() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if MARKER.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture(autouse=True)
def _no_marker_process_outlives_the_test():
    yield
    for pid in marker_processes():  # only if the code under test left its test command behind
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop(proc: subprocess.Popen, signum: int, seconds: float = 60) -> int:
    proc.send_signal(signum)
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"still running {seconds}s after {signal.Signals(signum).name}") from None


def test_sigterm_during_an_attempt_cancels_and_records_it_then_exits(tmp_path: Path) -> None:
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("intro"), docs_task("next"))}
    target = {
        "files": files,
        "test_command": SLOW_TESTS,
        "policy": {"max_open_prs": 5, "max_running_attempts": 1},
    }
    project = make_project(tmp_path, {"site": target})
    proc, out = start_run(project, tmp_path)
    try:
        wait_for(lambda: marker_processes() or proc.poll() is not None, 180, "the attempt's test command")
        assert proc.poll() is None, out.read_text()
        code = stop(proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = out.read_text()
    assert code == 0, output
    [line] = [line for line in output.splitlines() if line.startswith("stopped on SIGTERM")]
    assert "canceled site/intro #1" in line and "nothing new started" in line, line
    # Recorded: the attempt ended (not counted against the task), and nothing else was started.
    ledger = AttemptLedger.from_events(project.events().read())
    [attempt] = ledger.attempts("site")
    assert (attempt.status, attempt.failure_type) == ("failed", "infrastructure")
    assert attempt.error_summary.startswith("canceled: the orchestrator was stopped")
    assert not attempt.counts_against_task
    # The worker and the test command it started are gone.
    wait_for(lambda: not marker_processes(), 10, "the test command to be gone")


def test_sigint_between_cycles_stops_at_once_with_one_line(tmp_path: Path) -> None:
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("later", ready=False))}
    project = make_project(tmp_path, {"site": {"files": files}})
    proc, out = start_run(project, tmp_path)
    try:
        wait_for(lambda: "no task ready" in out.read_text() or proc.poll() is not None, 180, "a cycle")
        code = stop(proc, signal.SIGINT, seconds=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = out.read_text()
    assert code == 0, output
    assert output.splitlines()[-1] == "stopped on SIGINT: no attempt was in flight; nothing new started"
    assert "Traceback" not in output and "Aborted" not in output


PROBE = """
import time
from leviathan_dagster.cli.graceful import GracefulStop
with GracefulStop(announce=lambda line: print(line, flush=True)) as stop:
    print("ready", flush=True)
    time.sleep(60)  # work the stop does not interrupt: only a second signal does
    print("finished the work", flush=True)
"""


def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE], stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None  # the first asks for a stop; the work goes on
        started = time.monotonic()
        code = stop(proc, signal.SIGTERM, seconds=10)
        assert time.monotonic() - started < 10
        assert code == 128 + signal.SIGTERM
        assert proc.stdout.read() == "second signal (SIGTERM): stopping now\n"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
