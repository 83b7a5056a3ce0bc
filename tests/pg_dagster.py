"""Helpers for running the production Dagster instance (deploy/k8s/base/dagster.yaml) on a real PostgreSQL:
a fresh database per test, the instance file with a local run launcher, daemon processes under the
test's control, and the process tree of a run (to kill a run worker the way an evicted pod dies)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from support import REPO_ROOT
from test_event_log_postgres import ADMIN_DSN_ENV, DEFAULT_ADMIN_DSN, connect_admin

DAEMON = str(Path(sys.executable).parent / "dagster-daemon")


@contextmanager
def temporary_database() -> Iterator[str]:
    """A new database on the test server (dropped afterwards): its DSN."""
    admin_dsn = os.environ.get(ADMIN_DSN_ENV, DEFAULT_ADMIN_DSN)
    name = f"leviathan_dagster_{uuid.uuid4().hex[:12]}"
    with connect_admin(admin_dsn) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(admin_dsn, dbname=name)
    finally:
        with connect_admin(admin_dsn) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def production_instance(dagster_home: Path) -> None:
    """deploy/k8s/base/dagster.yaml with the one change a machine without a cluster needs: runs are launched
    as local processes (DefaultRunLauncher) instead of Kubernetes Jobs. Storage, the run queue, run
    retries and run monitoring are the production file's own; only monitoring polls faster, so a
    test does not wait a production minute for it."""
    config = yaml.safe_load((REPO_ROOT / "deploy" / "k8s" / "base" / "dagster.yaml").read_text())
    del config["run_launcher"]
    config["run_monitoring"]["poll_interval_seconds"] = 2
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def instance_environment(dsn: str, dagster_home: Path, project) -> dict[str, str]:
    """What the chart and the manifests put in every pod's environment, pointed at ``dsn``."""
    parts = conninfo_to_dict(dsn)
    return {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_HOST": str(parts.get("host", "127.0.0.1")),
        "DAGSTER_PG_PORT": str(parts.get("port", "5432")),
        "DAGSTER_PG_DB": str(parts["dbname"]),
        "DAGSTER_PG_USERNAME": str(parts.get("user", "postgres")),
        "DAGSTER_PG_PASSWORD": str(parts.get("password", "")),
        # The same database holds Leviathan's event log (its own tables), as in a small deployment.
        "LEVIATHAN_EVENT_LOG_DSN": dsn,
        "LEVIATHAN_CONFIG": str(project.config_path),
        "LEVIATHAN_HOME": str(project.home.root),
    }


@dataclass
class Daemon:
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # A code server whose run worker was killed can outlive its daemon (its group stays): end it
        # too, so no test leaves processes behind on the machine.
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def start_daemon(env: dict[str, str], cwd: Path, name: str) -> Daemon:
    log = cwd / f"{name}.log"
    with log.open("w") as stderr:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [DAEMON, "run", "-w", str(REPO_ROOT / "workspace.yaml")],
            env=env,
            cwd=cwd,
            stdout=stderr,  # the daemon logs its own ticks to stdout, run workers to stderr
            stderr=stderr,
            # Its own process group: stopping it stops its code server and run workers too.
            start_new_session=True,
        )
    return Daemon(process, log)


def wait_for(condition: Callable[[], object], seconds: float, what: str, daemons: list[Daemon]) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for daemon in daemons:
            if daemon.process.poll() is not None:
                pytest.fail(f"daemon exited ({daemon.process.returncode}): {daemon.log.read_text()[-2000:]}")
        time.sleep(0.5)
    tails = "\n".join(d.log.read_text()[-1500:] for d in daemons)
    pytest.fail(f"timed out after {seconds}s waiting for {what}\n{tails}")


def _proc_read(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def parent_of(pid: int) -> int:
    stat = _proc_read(pid, "stat").decode()
    # The command name (field 2) may hold spaces; the parent pid is the 2nd field after its ")".
    return int(stat.rsplit(")", 1)[1].split()[1]) if stat else 0


def processes_with_cmdline(fragment: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and fragment.encode() in _proc_read(int(entry.name), "cmdline"):
            found.append(int(entry.name))
    return found


def ancestors(pid: int, stop_at: int) -> list[int]:
    """pid's parent, grandparent, ... up to (not including) ``stop_at``."""
    chain, current = [], parent_of(pid)
    while current and current not in (stop_at, 1):
        chain.append(current)
        current = parent_of(current)
    return chain
