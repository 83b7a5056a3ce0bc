"""The production Dagster instance (deploy/k8s/base/dagster.yaml) on a real PostgreSQL, driven by real
`dagster-daemon run` processes: sensor ticks, the run queue, run retries after a killed run worker,
two daemons at once, and Leviathan's PostgreSQL event log in the same deployment.

A missing server FAILS these tests (see test_event_log_postgres.connect_admin): never skipped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
from pg_dagster import (
    Daemon,
    ancestors,
    instance_environment,
    processes_with_cmdline,
    production_instance,
    start_daemon,
    temporary_database,
    wait_for,
)
from support import backlog_yaml, docs_task, make_project

from leviathan_dagster.core.attempts import ledger as at
from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.events.postgres.store import PostgresEventLog
from leviathan_dagster.core.forge.local import LocalForge

pytestmark = pytest.mark.dagster
EVENT_LOG = {"backend": "postgres", "dsn": {"env": "LEVIATHAN_EVENT_LOG_DSN"}}
DEADLINE = 100
INSTANCE_ENV = (
    "DAGSTER_HOME",
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_DB",
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
)
RUNNING_STATUSES = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


class Deployment:
    """One deployment: a database, DAGSTER_HOME with the production instance, a project, daemons."""

    def __init__(self, tmp_path: Path, dsn: str, targets: dict[str, dict], monkeypatch) -> None:
        self.tmp_path, self.dsn, self.monkeypatch = tmp_path, dsn, monkeypatch
        self._instance: dg.DagsterInstance | None = None
        self.project = make_project(tmp_path / "project", targets, event_log=EVENT_LOG)
        production_instance(tmp_path / "dagster")
        self.env = instance_environment(dsn, tmp_path / "dagster", self.project)
        self.daemons: list[Daemon] = []

    def start_daemon(self, name: str) -> Daemon:
        daemon = start_daemon(self.env, self.tmp_path, name)
        self.daemons.append(daemon)
        return daemon

    def stop(self) -> None:
        for daemon in self.daemons:
            daemon.stop()
        if self._instance is not None:
            self._instance.dispose()

    def events(self) -> list:
        return list(PostgresEventLog(self.dsn).read())

    def open_prs(self, target: str) -> list:
        return LocalForge(target, str(self.project.repo(target)), self.project.home.root).list_pull_requests(
            "open"
        )

    def instance(self) -> dg.DagsterInstance:
        """The same PostgreSQL-backed instance the daemons use, opened in the test process."""
        if self._instance is None:
            for name in INSTANCE_ENV:
                self.monkeypatch.setenv(name, self.env[name])
            self._instance = dg.DagsterInstance.get()
        return self._instance

    def wait_for(self, condition, what: str, seconds: float = DEADLINE):
        return wait_for(condition, seconds, what, self.daemons)


@pytest.fixture
def deployment_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    made: list[Deployment] = []
    with temporary_database() as dsn:

        def make(targets: dict[str, dict]) -> Deployment:
            made.append(Deployment(tmp_path, dsn, targets, monkeypatch))
            return made[-1]

        try:
            yield make
        finally:
            for deployment in made:
                deployment.stop()


def site(*tasks: dict, **extra) -> dict:
    return {"files": {".leviathan/backlog.yaml": backlog_yaml(*tasks)}, **extra}


def test_sensor_ticks_and_queued_runs_on_postgres(deployment_factory) -> None:
    deployment = deployment_factory(
        {"docs": site(docs_task("a"), docs_task("b", dependencies=["a"])), "api": site(docs_task("x"))}
    )
    deployment.start_daemon("daemon")
    deployment.wait_for(
        lambda: deployment.open_prs("docs") and deployment.open_prs("api"), "a PR in each target"
    )

    instance = deployment.instance()
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    runs = instance.get_runs(filters=dg.RunsFilter(job_name="attempt_job"))
    assert sorted(r.tags["dagster/run_key"] for r in runs) == ["api/x:1", "docs/a:1"]
    deployment.wait_for(
        lambda: all(
            r.status == dg.DagsterRunStatus.SUCCESS
            for r in instance.get_runs(filters=dg.RunsFilter(job_name="attempt_job"))
        ),
        "both attempt runs to succeed",
    )
    ticks = instance.get_ticks(
        next(s for s in instance.all_instigator_state() if s.name == "attempt_sensor").instigator_origin_id,
        next(s for s in instance.all_instigator_state() if s.name == "attempt_sensor").selector_id,
    )
    assert ticks, "attempt_sensor ticks are stored in PostgreSQL"
    # The run queue has no limit of its own (deploy/k8s/base/dagster.yaml): the policy is the one authority.
    queue = instance.get_concurrency_config().run_queue_config
    assert not queue.tag_concurrency_limits and queue.max_concurrent_runs == -1

    events = deployment.events()
    ledger = AttemptLedger.from_events(events)
    assert {(a.target_id, a.task_id, a.status) for a in ledger.attempts()} == {
        ("docs", "a", "succeeded"),
        ("api", "x", "succeeded"),
    }
    run_ids = {r.run_id for r in runs}
    assert {a.run_id for a in ledger.attempts()} == run_ids
    assert ledger.task("docs", "b").attempts == []  # waits for a's PR to merge
    assert PostgresEventLog(deployment.dsn).verify().ok


def hold_command(hold: Path) -> list[str]:
    """A target test command that blocks while ``hold`` exists: the attempt is caught mid-flight. It runs
    in the sandbox, so ``hold``'s directory must be shown to it (LEVIATHAN_SANDBOX_READ_ONLY)."""
    return [sys.executable, "-c", f"import os, time\nwhile os.path.exists({str(hold)!r}): time.sleep(0.2)"]


def kill_run_worker(hold: Path, daemon: Daemon) -> list[int]:
    """SIGKILL the run worker process and everything below it (worker, test command), as an evicted or
    OOM-killed run pod dies. The code server and the daemon live on."""
    # bwrap's own argv names the command too; the test command is the interpreter inside the sandbox.
    [test_command] = [p for p in processes_with_cmdline(str(hold)) if not _is_bwrap(p)]
    # test command -> sandbox init -> bwrap -> worker -> run worker (steps run in it: in-process
    # executor) -> code server -> daemon
    chain = ancestors(test_command, stop_at=daemon.process.pid)
    victims = [test_command, *chain[:-1]]
    # Top down, as a pod's death takes them all at once: the run worker first, so nothing below it can
    # report the others' deaths; a process that ended on its own meanwhile is no error.
    for pid in reversed(victims):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return victims


def _is_bwrap(pid: int) -> bool:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"bwrap")


def test_killed_run_worker_is_relaunched_and_its_attempt_reconciled(
    deployment_factory, tmp_path: Path, monkeypatch
) -> None:
    (tmp_path / "held").mkdir()
    hold = tmp_path / "held" / "hold"
    hold.touch()
    monkeypatch.setenv("LEVIATHAN_SANDBOX_READ_ONLY", str(hold.parent))
    deployment = deployment_factory({"docs": site(docs_task("a"), test_command=hold_command(hold))})
    daemon = deployment.start_daemon("daemon")
    deployment.wait_for(lambda: processes_with_cmdline(str(hold)), "the first attempt to reach its tests")
    instance = deployment.instance()
    [first_run] = instance.get_runs(filters=dg.RunsFilter(job_name="attempt_job"))
    killed = kill_run_worker(hold, daemon)
    assert len(killed) == 5  # test command, the sandbox (init and bwrap), worker, run worker
    hold.unlink()

    # The code server sees its run worker gone and fails the run; the daemon re-launches it.
    retry = deployment.wait_for(
        lambda: instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": first_run.run_id})),
        "the daemon to re-launch the dead run",
    )[0]
    deployment.wait_for(lambda: deployment.open_prs("docs"), "the re-launched run to open the PR")
    assert instance.get_run_by_id(first_run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert retry.tags["leviathan/task"] == "a" and retry.tags["dagster/run_key"] == "docs/a:1"

    ledger = AttemptLedger.from_events(deployment.events())
    attempts = ledger.attempts("docs")
    lost = next(a for a in attempts if a.run_id == first_run.run_id)
    assert (lost.status, lost.failure_type) == ("failed", at.INFRASTRUCTURE)
    assert not lost.counts_against_task
    [won] = [a for a in attempts if a.status == "succeeded"]
    assert won.number > lost.number and won.run_id != first_run.run_id
    # Every attempt was started by exactly one worker.
    started = Counter(
        e.payload["attempt_id"] for e in deployment.events() if e.event_type == "attempt.started"
    )
    assert set(started.values()) == {1}
    assert len(deployment.open_prs("docs")) == 1


def test_two_daemons_at_once_never_launch_an_attempt_twice(deployment_factory) -> None:
    targets = {f"t{i}": site(docs_task("a"), docs_task("b")) for i in range(3)}
    deployment = deployment_factory(targets)
    first, second = deployment.start_daemon("daemon-1"), deployment.start_daemon("daemon-2")
    deployment.wait_for(lambda: all(deployment.open_prs(t) for t in targets), "a PR in every target")
    instance = deployment.instance()
    deployment.wait_for(
        lambda: (
            not instance.get_runs(filters=dg.RunsFilter(job_name="attempt_job", statuses=[*RUNNING_STATUSES]))
        ),
        "every attempt run to finish",
    )
    # Both daemons were really up against the same instance the whole time (wait_for fails if either
    # exits). Which of them evaluates a sensor tick or dequeues a run depends on timing, and Dagster's
    # "Another daemon is still sending heartbeats" notice on how the 30 s heartbeat loops interleave, so
    # neither is a reliable witness; their startup line is.
    for daemon in (first, second):
        assert "Instance is configured with the following daemons" in daemon.log.read_text()
        assert daemon.process.poll() is None

    events = deployment.events()
    ledger = AttemptLedger.from_events(events)
    started = Counter(e.payload["attempt_id"] for e in events if e.event_type == "attempt.started")
    created = Counter(e.payload["attempt_id"] for e in events if e.event_type == "attempt.created")
    assert set(started.values()) == {1} and set(created.values()) == {1}
    runs = instance.get_runs(filters=dg.RunsFilter(job_name="attempt_job"))
    story = "\n".join(
        [f"attempt {a.target_id}/{a.task_id}#{a.number} {a.status} run={a.run_id}" for a in ledger.attempts()]
        + [f"run {r.run_id} {r.status.value} key={r.tags.get('dagster/run_key')}" for r in runs]
    )
    assert sorted((a.target_id, a.status) for a in ledger.attempts()) == [
        (t, "succeeded") for t in sorted(targets)
    ], story
    assert all(len(deployment.open_prs(t)) == 1 for t in targets), story
    # However many runs Dagster created, no run_key executed an attempt twice.
    succeeded_keys = Counter(
        r.tags["dagster/run_key"] for r in runs if r.status == dg.DagsterRunStatus.SUCCESS
    )
    assert set(succeeded_keys.values()) == {1}
    assert PostgresEventLog(deployment.dsn).verify().ok
