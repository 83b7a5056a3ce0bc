"""PostgresEventLog against a real server: the shared contract, plus what only a database can suffer
(a session killed mid-transaction, rows edited or deleted in place, a head row that disagrees).

Every session creates its own database from ``LEVIATHAN_TEST_POSTGRES_DSN`` and drops it at the end. A
missing server FAILS these tests with a message saying what to start: CI must never skip them silently.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from event_log_contract import EventStoreContract, make_event
from psycopg import sql
from psycopg.conninfo import make_conninfo

from leviathan_dagster.core.errors import ConfigError, ConflictError, NotFoundError, TransientError
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.events.postgres.schema import CONFLICT_SQLSTATE
from leviathan_dagster.core.events.postgres.store import PostgresEventLog
from leviathan_dagster.core.events.registry import open_event_log
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import EventLogSettings
from worker.event_sink import StoreSink

ADMIN_DSN_ENV = "LEVIATHAN_TEST_POSTGRES_DSN"
DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def connect_admin(dsn: str) -> psycopg.Connection:
    """A connection to the admin database, or a test failure that says how to get one."""
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL is required by the event-log tests but is not reachable at {dsn!r}: {exc}. "
            f"Start it (`pg_ctlcluster 15 main start`) or point {ADMIN_DSN_ENV} at a server "
            "whose user may create databases. These tests are never skipped.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    admin_dsn = os.environ.get(ADMIN_DSN_ENV, DEFAULT_ADMIN_DSN)
    name = f"leviathan_test_{uuid.uuid4().hex[:12]}"
    with connect_admin(admin_dsn) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(admin_dsn, dbname=name)
    finally:
        with connect_admin(admin_dsn) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def prefix_for(tmp_path: Path) -> str:
    """One log per test: tables named after the test's temporary folder."""
    return "t_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]


class UnlockedPostgresLog(PostgresEventLog):
    """The race the head lock prevents, made likely: a variant of the append function that reads the
    head without FOR UPDATE, then pauses 2 ms before building on it."""

    append_function = "append_unlocked"
    check_ids = True

    def _define_append(self, conn: psycopg.Connection) -> None:
        # Defined where the real one is, under the schema's advisory lock: writer processes open the
        # log at once, and concurrent CREATE OR REPLACE of one function collide in the catalog.
        super()._define_append(conn)
        variant = self.tables.define_append(self.append_function, lock_head=False, check_ids=self.check_ids)
        self._define_function(conn, self.append_function, variant)


def open_writer(spec: dict, unlocked: bool) -> PostgresEventLog:
    """The contract's writer processes open the log through this."""
    return (UnlockedPostgresLog if unlocked else PostgresEventLog)(spec["dsn"], table_prefix=spec["prefix"])


class TestPostgresEventLog(EventStoreContract):
    writer_opener = "test_event_log_postgres:open_writer"

    @pytest.fixture(autouse=True)
    def _server(self, postgres_dsn: str) -> None:
        self.dsn = postgres_dsn

    def make_store(self, tmp_path: Path) -> PostgresEventLog:
        return PostgresEventLog(self.dsn, table_prefix=prefix_for(tmp_path))

    def writer_spec(self, tmp_path: Path) -> dict:
        return {"dsn": self.dsn, "prefix": prefix_for(tmp_path)}

    def tamper(self, store: PostgresEventLog, seq: int) -> None:
        execute(
            self.dsn,
            "UPDATE {events} SET body = convert_to(replace(convert_from(body, 'UTF8'), "
            """'"payload":{{', '"payload":{{"tampered":true,'), 'UTF8') WHERE seq = %s""",
            store,
            seq,
        )


def execute(dsn: str, template: str, store: PostgresEventLog, *params: object) -> None:
    """Run SQL behind the store's back; ``{events}``/``{head}``/``{append}`` name its tables and append
    function (``{kill}``: a test trigger)."""
    query = sql.SQL(template).format(
        events=sql.Identifier(store.tables.name("events")),
        head=sql.Identifier(store.tables.name("head")),
        kill=sql.Identifier(store.tables.name("test_kill")),
        append=sql.Identifier(store.tables.name("append")),
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(query, params)


@pytest.fixture
def five(postgres_dsn: str, tmp_path: Path) -> PostgresEventLog:
    store = PostgresEventLog(postgres_dsn, table_prefix=prefix_for(tmp_path))
    store.append([make_event(i, note="é\x1f") for i in range(1, 3)])
    store.append([make_event(i) for i in range(3, 6)])
    return store


# -- a session killed mid-transaction ----------------------------------------------------------------


def kill_the_session_before_the_head_moves(dsn: str, store: PostgresEventLog) -> None:
    """Arm a trigger: the next append's session is terminated by the server after its rows are inserted
    and before the head row is updated, so before COMMIT (the trigger's own pg_sleep lets the
    termination land there)."""
    execute(
        dsn,
        "CREATE FUNCTION {kill}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5); RETURN NEW; END $$",
        store,
    )
    execute(
        dsn, "CREATE TRIGGER {kill} BEFORE UPDATE ON {head} FOR EACH ROW EXECUTE FUNCTION {kill}()", store
    )


def disarm(dsn: str, store: PostgresEventLog) -> None:
    execute(dsn, "DROP TRIGGER {kill} ON {head}", store)
    execute(dsn, "DROP FUNCTION {kill}()", store)


@pytest.mark.parametrize("size", [1, 20], ids=["one-event", "bundle"])
def test_a_session_killed_mid_transaction_writes_nothing(
    five: PostgresEventLog, postgres_dsn: str, size: int
) -> None:
    before, head = list(five.read()), five.head()
    store = PostgresEventLog(postgres_dsn, table_prefix=five.tables.prefix)
    bundle = [make_event(100 + i) for i in range(size)]
    kill_the_session_before_the_head_moves(postgres_dsn, five)
    try:
        with pytest.raises(TransientError, match="append failed"):
            store.append(bundle)
    finally:
        disarm(postgres_dsn, five)
    assert five.head() == head and list(five.read()) == before
    assert all(five.get(event.event_id) is None for event in bundle)
    # The same instance reconnects; the retried bundle lands once, right after the old head.
    assert [item.seq for item in store.append(bundle)] == list(range(6, 6 + size))
    assert five.verify().ok


@pytest.mark.parametrize("call", ["head", "get", "append"])
def test_a_session_the_server_ended_while_idle_is_reopened_once(
    five: PostgresEventLog, postgres_dsn: str, call: str
) -> None:
    # What a server restart does to a long-lived writer (a worker waiting on its test command): its
    # session is gone, which it only learns on the next call. That call must not fail for it.
    first = next(iter(five.read()))
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:  # every session but this one
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    if call == "head":
        assert five.head()[0] == 5
    elif call == "get":
        assert five.get(first.event.event_id) == first
    else:
        assert [stored.seq for stored in five.append([make_event(6)])] == [6]
    assert five.verify().ok


def test_an_unreachable_server_is_a_transient_error() -> None:
    with pytest.raises(TransientError, match="failed"):
        PostgresEventLog("postgresql://postgres@127.0.0.1:1/postgres")


def test_a_missing_server_fails_the_tests_instead_of_skipping_them() -> None:
    with pytest.raises(pytest.fail.Exception, match="never skipped"):
        connect_admin("postgresql://postgres@127.0.0.1:1/postgres")


# -- rows changed behind the log's back --------------------------------------------------------------


@pytest.mark.parametrize("full", [True, False], ids=["full", "hash-only"])
def test_a_flipped_byte_of_any_body_is_found_at_its_seq(
    five: PostgresEventLog, postgres_dsn: str, full: bool
) -> None:
    flip = "UPDATE {events} SET body = set_byte(body, %s, get_byte(body, %s) # 1) WHERE seq = %s"
    for stored in list(five.read()):
        for position in (0, len(stored.body) // 2, len(stored.body) - 1):
            execute(postgres_dsn, flip, five, position, position, stored.seq)
            report = five.verify(full=full)
            assert (report.ok, report.first_bad_seq, report.kind) == (False, stored.seq, "modified"), report
            execute(postgres_dsn, flip, five, position, position, stored.seq)  # flip it back
    assert five.verify(full=full).ok


def test_deleted_rows_are_found(five: PostgresEventLog, postgres_dsn: str) -> None:
    execute(postgres_dsn, "DELETE FROM {events} WHERE seq = 3", five)
    report = five.verify()
    assert (report.first_bad_seq, report.kind) == (3, "deleted") and "seq 3..3 deleted" in report.reason


def test_rows_removed_from_the_end_are_found_against_the_head_row(
    five: PostgresEventLog, postgres_dsn: str
) -> None:
    execute(postgres_dsn, "DELETE FROM {events} WHERE seq >= 4", five)
    for full in (True, False):
        report = five.verify(full=full)
        assert (report.first_bad_seq, report.events, report.kind) == (4, 3, "truncated")


def test_an_edited_event_id_column_is_found(five: PostgresEventLog, postgres_dsn: str) -> None:
    execute(postgres_dsn, "UPDATE {events} SET event_id = 'other' WHERE seq = 2", five)
    for full in (True, False):
        report = five.verify(full=full)
        assert (report.first_bad_seq, report.kind) == (2, "modified")


def test_an_edited_head_row_is_found(five: PostgresEventLog, postgres_dsn: str) -> None:
    execute(postgres_dsn, "UPDATE {head} SET head_hash = repeat('0', 64)", five)
    report = five.verify()
    assert (report.ok, report.first_bad_seq, report.kind) == (False, 5, "modified")


def test_an_unlocked_writer_hits_the_constraints_not_a_fork(
    five: PostgresEventLog, postgres_dsn: str
) -> None:
    # Even a writer that skips the head lock and the id check cannot fork the table or store an id
    # twice: the unique constraints refuse, and the errors arrive translated.
    class Blind(UnlockedPostgresLog):
        append_function = "append_blind"
        check_ids = False

    blind = Blind(postgres_dsn, table_prefix=five.tables.prefix)
    with pytest.raises(ConflictError, match="already stored"):
        blind.append([next(five.read()).event])
    execute(postgres_dsn, "UPDATE {head} SET head_seq = 4", five)  # a stale head, as a racing writer sees it
    with pytest.raises(TransientError, match="chain head moved"):
        blind.append([make_event(6)])


# -- the append function ----------------------------------------------------------------------------


def test_the_server_computes_the_same_chain_as_the_ndjson_log(postgres_dsn: str, tmp_path: Path) -> None:
    # The hashes are computed in SQL (sha256, int8send) and must be byte-identical to chain.chain_hash:
    # the same log_id and events give the same seqs, prev_hashes, hashes and bodies in both backends.
    postgres = PostgresEventLog(postgres_dsn, log_id="same-log", table_prefix=prefix_for(tmp_path))
    ndjson = NdjsonEventLog(tmp_path / "log.ndjson", log_id="same-log")
    bundles = [
        [make_event(1, text="é\x1f\u2028 \U0001f600", nested={"b": [1, 2.5, None, True], "a": ""})],
        [make_event(i, big=2**53 - 1 - i) for i in range(2, 300)],
        [make_event(300)],
    ]
    bundles.append(bundles[1][:3] + [make_event(301)])  # a re-append with one new event
    for bundle in bundles:
        assert postgres.append(bundle) == ndjson.append(bundle)
    assert postgres.head() == ndjson.head() and postgres.head()[0] == 301
    assert list(postgres.read()) == list(ndjson.read())
    assert postgres.verify().ok and ndjson.verify().ok


def test_a_reused_event_id_is_its_own_sqlstate_and_writes_nothing(five: PostgresEventLog) -> None:
    # The function reports the conflict under CONFLICT_SQLSTATE; nothing of the bundle stays.
    first = next(five.read())
    changed = replace(first.event, payload={"changed": True})
    with pytest.raises(
        ConflictError, match=f"{first.event.event_id!r} is already in the log at seq 1"
    ) as info:
        five.append([make_event(10), make_event(11), changed])
    assert isinstance(info.value.__cause__, psycopg.Error)
    assert info.value.__cause__.sqlstate == CONFLICT_SQLSTATE
    assert five.head()[0] == 5 and len(list(five.read())) == 5
    assert five.append_one(make_event(10)).seq == 6  # the connection is still usable


def test_opening_a_log_defines_its_append_function_only_when_needed(
    five: PostgresEventLog, postgres_dsn: str
) -> None:
    def version() -> object:  # the catalog row's xmin changes whenever the function is (re)defined
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            query = "SELECT xmin::text FROM pg_proc WHERE oid = to_regprocedure(%s)"
            row = conn.execute(query, (five.tables.append_signature(),)).fetchone()
        return None if row is None else row[0]

    defined = version()
    assert defined is not None
    PostgresEventLog(postgres_dsn, table_prefix=five.tables.prefix).close()
    assert version() == defined  # same body: left alone

    # A log created before the function existed (or whose function was dropped or changed) gets this
    # version's function back on open.
    execute(postgres_dsn, "DROP FUNCTION {append}", five)
    reopened = PostgresEventLog(postgres_dsn, table_prefix=five.tables.prefix)
    assert reopened.append_one(make_event(6)).seq == 6
    unlocked = five.tables.define_append(lock_head=False)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(unlocked)
    changed = version()
    PostgresEventLog(postgres_dsn, table_prefix=five.tables.prefix).close()
    assert version() not in (None, changed)
    assert reopened.append_one(make_event(7)).seq == 7 and reopened.verify().ok


# -- identity and configuration ----------------------------------------------------------------------


def test_log_id_is_kept_and_checked(postgres_dsn: str, tmp_path: Path) -> None:
    prefix = prefix_for(tmp_path)
    PostgresEventLog(postgres_dsn, log_id="orders", table_prefix=prefix).append_one(make_event(1))
    assert PostgresEventLog(postgres_dsn, table_prefix=prefix).log_id == "orders"
    with pytest.raises(ConfigError, match="another log"):
        PostgresEventLog(postgres_dsn, log_id="payments", table_prefix=prefix)


@pytest.mark.parametrize("prefix", ["Bad", "x;drop", "", "1abc"])
def test_table_prefix_must_be_a_plain_name(postgres_dsn: str, prefix: str) -> None:
    with pytest.raises(ConfigError, match="table_prefix"):
        PostgresEventLog(postgres_dsn, table_prefix=prefix)


def test_a_malformed_dsn_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="DSN is not valid"):
        PostgresEventLog("host=127.0.0.1 nonsense")


def test_open_event_log_opens_postgres_from_settings(postgres_dsn: str, tmp_path: Path) -> None:
    settings = EventLogSettings(backend="postgres", dsn_env="LOG_DSN", table_prefix=prefix_for(tmp_path))
    with open_event_log(LeviathanHome(tmp_path), settings, environ={"LOG_DSN": postgres_dsn}) as store:
        assert isinstance(store, PostgresEventLog)
        assert store.append_one(make_event(1)).seq == 1


def test_the_workers_sink_retries_through_killed_sessions_and_lands_once(
    five: PostgresEventLog, postgres_dsn: str
) -> None:
    # The fault: a PostgreSQL restart while the test command ran lost a successful attempt,
    # because the worker's one append was never retried. Here every append's session is killed by the
    # server until the trigger is dropped (a second later, from another connection); the sink keeps
    # retrying with backoff, reopening the store, and the bundle lands exactly once.
    store = PostgresEventLog(postgres_dsn, table_prefix=five.tables.prefix)
    sink = StoreSink(store, opener=lambda: PostgresEventLog(postgres_dsn, table_prefix=five.tables.prefix))
    bundle = [make_event(200), make_event(201)]
    kill_the_session_before_the_head_moves(postgres_dsn, five)
    disarmer = threading.Timer(1.0, disarm, (postgres_dsn, five))
    disarmer.start()
    try:
        assert sink.append(bundle) == [6, 7]
    finally:
        disarmer.join()
    assert sink.append(bundle) == [6, 7]  # a replay of an acknowledged bundle writes nothing
    assert five.head()[0] == 7 and five.verify().ok


def test_the_sink_gives_up_after_its_bounded_retries(five: PostgresEventLog, postgres_dsn: str) -> None:
    waits: list[float] = []
    sink = StoreSink(PostgresEventLog(postgres_dsn, table_prefix=five.tables.prefix), sleep=waits.append)
    kill_the_session_before_the_head_moves(postgres_dsn, five)
    try:
        with pytest.raises(TransientError, match="append failed"):
            sink.append([make_event(300)])
    finally:
        disarm(postgres_dsn, five)
    assert waits == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert five.head()[0] == 5


def test_a_read_only_open_creates_no_tables(postgres_dsn: str, tmp_path: Path) -> None:
    prefix = prefix_for(tmp_path)
    with pytest.raises(NotFoundError, match=f"no event log at PostgreSQL table {prefix}_head"):
        PostgresEventLog(postgres_dsn, table_prefix=prefix, read_only=True)
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (f"{prefix}_head",)).fetchone() == (None,)
    writer = PostgresEventLog(postgres_dsn, table_prefix=prefix)
    writer.append([make_event(1)])
    reader = PostgresEventLog(postgres_dsn, table_prefix=prefix, read_only=True)
    assert reader.log_id == writer.log_id and reader.verify().ok and reader.head() == writer.head()
    with pytest.raises(TransientError, match="read-only"):
        reader.append([make_event(2)])
