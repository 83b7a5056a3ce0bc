"""Projection snapshots with the PostgreSQL backend: rows of ``<prefix>_projections`` in the log's
database, used and refused by the same rules as the NDJSON folder (see test_projection_snapshots)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import psycopg
from psycopg import sql
from test_event_log_postgres import postgres_dsn, prefix_for  # noqa: F401 - the fixture
from test_projection_snapshots import ALL, full_fold, state_bytes

from leviathan_dagster.core.events.postgres.store import PostgresEventLog
from leviathan_dagster.core.projections.log_view import LogView
from leviathan_dagster.core.projections.snapshot_checks import check_snapshots

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.history import history_events  # noqa: E402


def test_a_postgres_log_resumes_from_its_snapshot_rows_and_refuses_a_damaged_one(
    postgres_dsn,  # noqa: F811
    tmp_path,
    caplog,
) -> None:
    prefix = prefix_for(tmp_path)
    store = PostgresEventLog(postgres_dsn, table_prefix=prefix)
    assert LogView(store)._projection("ledger").last_seq == 0  # no table yet: nothing, no error
    events = list(history_events(300, targets=("a", "b"), close_ratio=0.3))
    store.append(events[:150])
    writer = LogView(store)
    writer.require(*ALL)
    writer.refresh()
    assert {key.projection for key in writer.write_snapshots(every=1)} == set(ALL)
    store.append(events[150:])

    reads: list[int] = []
    fresh = PostgresEventLog(postgres_dsn, table_prefix=prefix)
    original = fresh.read
    fresh.read = lambda after_seq=0: (reads.append(after_seq), original(after_seq))[1]  # type: ignore[method-assign]
    resumed = LogView(fresh)
    resumed.require(*ALL)
    resumed.refresh()
    assert resumed._snapshot_seq == dict.fromkeys(ALL, 150) and 0 not in reads
    reference = full_fold(PostgresEventLog(postgres_dsn, table_prefix=prefix))
    for name in ALL:
        assert state_bytes(resumed, name) == state_bytes(reference, name), name
    assert all(check.ok for check in check_snapshots(store))

    # A read-only open (a read command) never writes a row.
    reader = LogView(PostgresEventLog(postgres_dsn, table_prefix=prefix, read_only=True))
    reader.require("ledger")
    reader.refresh()
    assert reader.write_snapshots(every=1) == []

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET body = substring(body from 1 for 100) WHERE projection = 'ledger'").format(
                sql.Identifier(f"{prefix}_projections")
            )
        )
    with caplog.at_level(logging.WARNING):
        again = LogView(PostgresEventLog(postgres_dsn, table_prefix=prefix, read_only=True))
        assert again._projection("ledger").last_seq == 0
    assert any(f"{prefix}_projections(ledger, seq 150)" in r.getMessage() for r in caplog.records)
    assert [c.projection for c in (check.key for check in check_snapshots(store) if not check.ok)] == [
        "ledger"
    ]
