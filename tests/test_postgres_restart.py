"""A real PostgreSQL restart during an attempt loses nothing (issue 11): `leviathan run --once` on a
target whose event log is in PostgreSQL, the test's own throwaway server restarted while the
attempt's test command runs, or stopped when the worker comes to record its PR. Exactly one PR, the
worker's own ``pr.created`` and ``attempt.succeeded`` in the log, a chain that verifies, and a task
shown as in review.

The test command (inside the sandbox: private /tmp, no network, read-only checkout) waits for
SIGUSR1, which the test sends from outside once the server is where it wants it. Every wait is polled
with a generous deadline; nothing here asserts on a duration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pg_cluster import ThrowawayCluster
from pg_dagster import ancestors, processes_with_cmdline
from support import Project, backlog_yaml, docs_task, make_project

from leviathan_dagster.core.attempts.ledger import AttemptLedger, make_attempt_id
from leviathan_dagster.core.attempts.recovery import ORCHESTRATOR
from leviathan_dagster.core.events.postgres.store import PostgresEventLog
from leviathan_dagster.core.forge.registry import forge_for

WAIT_SECONDS = 600  # loaded 2-core machine: generous, and only ever polled
DSN_ENV = "LEVIATHAN_RESTART_TEST_DSN"

# Exits 0 on SIGUSR1; on its own only after far longer than any wait here (then the attempt fails).
WAITS_FOR_SIGNAL = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGUSR1, lambda *_: sys.exit(0))\n"
    "time.sleep(1800)\n"
    "sys.exit(1)\n"
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayCluster]:
    server = ThrowawayCluster()
    try:
        server.start()
        yield server
    finally:
        server.remove()


def poll(condition: Callable[[], object], what: str, proc: subprocess.Popen) -> object:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"run --once ended ({proc.returncode}) before {what}:\n{out}\n{err[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {WAIT_SECONDS}s waiting for {what}")


def _fresh_database(cluster: ThrowawayCluster) -> str:
    import psycopg
    from psycopg import sql

    name = f"restart_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(cluster.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return cluster.dsn.rsplit("/", 1)[0] + f"/{name}"


def _project(tmp_path: Path, marker: str) -> Project:
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("intro")), "README.md": "# target\n"}
    test_command = [sys.executable, "-c", WAITS_FOR_SIGNAL, marker]
    return make_project(
        tmp_path,
        {"site": {"files": files, "test_command": test_command, "policy": {"backoff_seconds": 0}}},
        event_log={"backend": "postgres", "dsn": {"env": DSN_ENV}},
    )


def _cli(project: Project, dsn: str, *args: str, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "leviathan_dagster.cli", "--config", str(project.config_path)]
    command += ["--home", str(project.home.root), *args]
    env = {**os.environ, DSN_ENV: dsn}
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def _test_command_pid(marker: str) -> int | None:
    """The sandboxed test command's own process (bwrap's command line holds the marker too)."""
    for pid in processes_with_cmdline(marker):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if not argv0.endswith(b"bwrap"):
            return pid
    return None


def _worker_pid(cycle: subprocess.Popen) -> int | None:
    """This cycle's worker (other tests on the machine may be running workers of their own)."""
    found = [pid for pid in processes_with_cmdline("-m\0worker") if cycle.pid in ancestors(pid, 1)]
    return found[0] if found else None


def _sleeping_between_tries(pid: int) -> bool:
    """The worker is in a backoff sleep: after result.json the only sleep it has is the one between two
    tries of its append (tenacity's time.sleep)."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text() == "hrtimer_nanosleep"
    except OSError:
        return False


def _settle(project: Project, dsn: str, cycle: subprocess.Popen) -> list:
    out, err = cycle.communicate(timeout=WAIT_SECONDS)
    assert cycle.returncode == 0, f"{out}\n{err[-3000:]}"
    [pull] = forge_for(project.target("site"), project.home).list_pull_requests("open")
    with PostgresEventLog(dsn, read_only=True) as log:
        events = [stored.event for stored in log.read()]
        [attempt] = AttemptLedger.from_events(log.read()).attempts()
    assert (attempt.status, attempt.pr_number) == ("succeeded", pull.number)
    mine = [e for e in events if e.payload.get("attempt_id") == attempt.attempt_id]
    types = [e.event_type for e in mine]
    assert types.count("pr.created") == types.count("attempt.succeeded") == 1, types

    verify = _cli(project, dsn, "events", "verify")
    out, err = verify.communicate(timeout=WAIT_SECONDS)
    assert verify.returncode == 0, f"{out}\n{err}"
    shown = _cli(project, dsn, "tasks", "--json")
    out, err = shown.communicate(timeout=WAIT_SECONDS)
    assert shown.returncode == 0, f"{out}\n{err}"
    [row] = json.loads(out)["site"]["tasks"]
    assert (row["task"], row["reason"]) == ("intro", "open_pr"), row
    return mine


@dataclass
class InFlight:
    """An attempt of `run --once` whose sandboxed test command is waiting for SIGUSR1."""

    project: Project
    dsn: str
    cycle: subprocess.Popen
    test_command: int
    worker: int

    def finish_tests(self) -> None:
        os.kill(self.test_command, signal.SIGUSR1)


@contextmanager
def attempt_in_flight(tmp_path: Path, cluster: ThrowawayCluster) -> Iterator[InFlight]:
    marker = f"leviathan-restart-{uuid.uuid4().hex}"
    dsn = _fresh_database(cluster)
    project = _project(tmp_path, marker)
    cycle = _cli(project, dsn, "run", "--once", "--json", start_new_session=True)
    try:
        command = poll(lambda: _test_command_pid(marker), "the test command to start", cycle)
        worker = poll(lambda: _worker_pid(cycle), "the worker process", cycle)
        yield InFlight(project, dsn, cycle, command, worker)
    finally:
        if not cluster.running:  # a failed test leaves the module's server up for the next one
            cluster.start()
        if cycle.poll() is None:
            os.killpg(cycle.pid, signal.SIGKILL)
            cycle.communicate()


def _recorded_by_the_worker(mine: list) -> bool:
    succeeded = next(e for e in mine if e.event_type == "attempt.succeeded")
    return succeeded.actor_id.startswith("worker-") and "recovered_from" not in succeeded.payload


@pytest.mark.dagster
def test_a_server_restart_while_the_test_command_runs_loses_nothing(
    tmp_path: Path, cluster: ThrowawayCluster
) -> None:
    with attempt_in_flight(tmp_path, cluster) as attempt:
        # The worker and the orchestrator both hold sessions opened before this: the restart ends them.
        cluster.stop()
        cluster.start()
        attempt.finish_tests()
        mine = _settle(attempt.project, attempt.dsn, attempt.cycle)
    # The worker recorded its own success (its dead session reopened), nothing had to be recovered.
    assert _recorded_by_the_worker(mine)


@pytest.mark.dagster
def test_a_server_down_when_the_worker_records_its_pr_is_waited_for(
    tmp_path: Path, cluster: ThrowawayCluster
) -> None:
    with attempt_in_flight(tmp_path, cluster) as attempt:
        cluster.stop()
        attempt.finish_tests()
        # The worker pushes, opens its PR, writes result.json, then its append fails against the
        # stopped server: wait until it sleeps between two tries before starting the server again.
        result = attempt.project.home.artifacts_dir(make_attempt_id("site", "intro", 1)) / "result.json"
        poll(
            lambda: result.exists() and _sleeping_between_tries(attempt.worker),
            "a failed append",
            attempt.cycle,
        )
        cluster.start()
        mine = _settle(attempt.project, attempt.dsn, attempt.cycle)
    assert _recorded_by_the_worker(mine)  # its bounded retry outlasted the outage


@pytest.mark.dagster
def test_a_server_down_past_the_workers_retries_is_recovered_by_the_orchestrator(
    tmp_path: Path, cluster: ThrowawayCluster
) -> None:
    # The worker gives up (its bounded retries all refused); result.json and the open PR are what is
    # left. The orchestrator, reading again once the server is back, records the PR from the forge.
    with attempt_in_flight(tmp_path, cluster) as attempt:
        cluster.stop()
        attempt.finish_tests()
        poll(lambda: not Path(f"/proc/{attempt.worker}").exists(), "the worker to give up", attempt.cycle)
        cluster.start()
        mine = _settle(attempt.project, attempt.dsn, attempt.cycle)
    succeeded = next(e for e in mine if e.event_type == "attempt.succeeded")
    assert (succeeded.actor_id, succeeded.payload["recovered_from"]) == (ORCHESTRATOR, "forge")
    artifacts = attempt.project.home.artifacts_dir(succeeded.payload["attempt_id"])
    result = json.loads((artifacts / "result.json").read_text())
    assert result["status"] == "succeeded" and result["pr_number"] == succeeded.payload["pr_number"]
