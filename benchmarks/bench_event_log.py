"""How fast are the event-log backends, next to what this machine's disk, CPU and PostgreSQL allow?

    python benchmarks/bench_event_log.py

Prints the issue's table: NDJSON appends (1 event per call, bundles of 100), PostgreSQL appends (1 event
per transaction, 8 writer processes with a fork count, bundles of 100), full and hash-only verify; each
beside a raw limit measured in the same run (SHA-256 of 1 KiB, fsync of a small append, a plain
single-row INSERT transaction) and the ratio. PostgreSQL runs in a temporary database created from
``LEVIATHAN_BENCH_POSTGRES_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``) and dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# Run as a plain script from a checkout: make the package importable without installing it.
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

from leviathan_dagster.core.events.model import Event  # noqa: E402
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog  # noqa: E402
from leviathan_dagster.core.events.postgres.store import PostgresEventLog  # noqa: E402
from leviathan_dagster.core.events.store import EventStore  # noqa: E402

SINGLE_EVENTS = 2_000
BUNDLED_EVENTS = 20_000
BUNDLE_SIZE = 100
WRITERS = 8
EVENTS_PER_WRITER = 250
ADMIN_DSN = os.environ.get("LEVIATHAN_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

WRITER = r"""
import json, sys, time
from pathlib import Path
from leviathan_dagster.core.events.model import Event
from leviathan_dagster.core.events.postgres.store import PostgresEventLog
dsn, go, count, name = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
log = PostgresEventLog(dsn, table_prefix="writers")
events = [Event.new("attempt.started", {"attempt": i, "worker": name}, actor_id=name) for i in range(count)]
print("ready", flush=True)
while not go.exists():
    time.sleep(0.0005)
print(json.dumps([log.append_one(event).seq for event in events]), flush=True)
"""


def make_events(count: int) -> list[Event]:
    return [
        Event.new(
            "attempt.started",
            {"task_id": f"task-{i % 50}", "attempt": i, "worker": "bench"},
            actor_id="bench",
        )
        for i in range(count)
    ]


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def append_singles(store: EventStore, count: int) -> float:
    events = make_events(count)
    return count / timed(lambda: [store.append([event]) for event in events])


def append_bundles(store: EventStore, count: int) -> float:
    events = make_events(count)
    bundles = [events[i : i + BUNDLE_SIZE] for i in range(0, count, BUNDLE_SIZE)]
    return count / timed(lambda: [store.append(bundle) for bundle in bundles])


def verify_rate(store: EventStore, *, full: bool) -> float:
    reports = []
    seconds = timed(lambda: reports.append(store.verify(full=full)))
    assert reports[0].ok, reports[0]
    return reports[0].events / seconds


def raw_fsync_rate(directory: Path, count: int = 2_000) -> float:
    fd = os.open(directory / "raw.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        data = b"x" * 299 + b"\n"
        start = time.perf_counter()
        for _ in range(count):
            os.write(fd, data)
            os.fsync(fd)
        return count / (time.perf_counter() - start)
    finally:
        os.close(fd)


def raw_sha256_rate(count: int = 200_000) -> float:
    block = os.urandom(1024)
    start = time.perf_counter()
    for _ in range(count):
        hashlib.sha256(block).digest()
    return count / (time.perf_counter() - start)


def raw_insert_rate(dsn: str, count: int = 2_000) -> float:
    """Plain single-row INSERT transactions (autocommit: one commit, one WAL flush each)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE raw_insert (id bigserial PRIMARY KEY, body bytea NOT NULL)")
        body = b"x" * 300
        start = time.perf_counter()
        for _ in range(count):
            conn.execute("INSERT INTO raw_insert (body) VALUES (%s)", (body,))
        return count / (time.perf_counter() - start)


def concurrent_writers(dsn: str, directory: Path) -> tuple[float, int, bool]:
    """(events/s, forks, verify ok) for WRITERS processes appending one event per transaction."""
    PostgresEventLog(dsn, table_prefix="writers").close()
    go = directory / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, dsn, str(go), str(EVENTS_PER_WRITER), f"w{n}"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(WRITERS)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    start = time.perf_counter()
    go.touch()
    seqs = [seq for proc in procs for seq in json.loads(proc.communicate(timeout=120)[0])]
    seconds = time.perf_counter() - start
    total = WRITERS * EVENTS_PER_WRITER
    # A fork is an acknowledged seq handed out twice, or one missing from 1..total.
    forks = (len(seqs) - len(set(seqs))) + len(set(range(1, total + 1)) - set(seqs))
    with PostgresEventLog(dsn, table_prefix="writers") as log:
        report = log.verify(full=False)
    return total / seconds, forks, report.ok and report.events == total


@contextmanager
def temporary_database() -> Iterator[str]:
    name = f"leviathan_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(ADMIN_DSN, dbname=name)
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def main() -> None:
    rows: list[tuple[str, str, float, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-event-log-") as tmp, temporary_database() as dsn:
        directory = Path(tmp)
        fsync = raw_fsync_rate(directory)
        sha = raw_sha256_rate()
        insert = raw_insert_rate(dsn)

        single = append_singles(NdjsonEventLog(directory / "single.ndjson"), SINGLE_EVENTS)
        bundled_log = NdjsonEventLog(directory / "bundled.ndjson")
        bundled = append_bundles(bundled_log, BUNDLED_EVENTS)
        rows += [
            ("NDJSON durable append, 1 event per call", ">= 1,500", single, "fsync", fsync),
            ("NDJSON, bundles of 100", ">= 8,000", bundled, "fsync", fsync),
        ]
        with PostgresEventLog(dsn, table_prefix="single") as pg_single:
            pg_one = append_singles(pg_single, SINGLE_EVENTS)
        pg_writers, forks, writers_ok = concurrent_writers(dsn, directory)
        with PostgresEventLog(dsn, table_prefix="bundled") as pg_bundled:
            pg_bundle = append_bundles(pg_bundled, BUNDLED_EVENTS)
            pg_full = verify_rate(pg_bundled, full=True)
            pg_hash = verify_rate(pg_bundled, full=False)
        rows += [
            ("PostgreSQL, 1 event per transaction", ">= 1,000", pg_one, "INSERT tx", insert),
            (
                f"PostgreSQL, {WRITERS} writer processes ({forks} forks)",
                ">= 1,000, 0 forks",
                pg_writers,
                "INSERT tx",
                insert,
            ),
            ("PostgreSQL, bundles of 100", ">= 5,000", pg_bundle, "INSERT tx", insert),
            ("full verify, NDJSON", ">= 15,000", verify_rate(bundled_log, full=True), "SHA-256", sha),
            ("hash-only verify, NDJSON", ">= 100,000", verify_rate(bundled_log, full=False), "SHA-256", sha),
            ("full verify, PostgreSQL", ">= 15,000", pg_full, "SHA-256", sha),
            ("hash-only verify, PostgreSQL", ">= 100,000", pg_hash, "SHA-256", sha),
        ]
        line_bytes = bundled_log.path.stat().st_size / BUNDLED_EVENTS

    print(f"{'measure':<46} {'goal':>18} {'events/s':>10}   {'raw limit /s':>22} {'ratio':>7}")
    for name, goal, value, limit_name, limit in rows:
        print(f"{name:<46} {goal:>18} {value:10,.0f}   {limit_name:>10} {limit:11,.0f} {value / limit:7.3f}")
    print(
        f"\nNDJSON line size {line_bytes:.0f} bytes; {WRITERS} writers: {forks} forks, "
        f"verify ok: {writers_ok}"
    )
    print("ratio = measured / raw limit (for bundles: events per raw fsync or INSERT transaction)")
    if forks or not writers_ok:
        sys.exit("the concurrent writers forked the chain")


if __name__ == "__main__":
    main()
