"""The event log in PostgreSQL: the production backend, for many concurrent writers on many machines.

Two tables (see ``postgres_schema``): the events, with unique ``seq``, ``event_id`` and ``prev_hash``, and a
one-row head holding the log's identity and the chain head. Every append is one call of a server-side
function, in one transaction that locks the head row first. psycopg errors are translated here, once,
into TransientError / ConflictError.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

import psycopg
from psycopg import IsolationLevel, errors, sql

from leviathan_dagster.core.errors import (
    ConfigError,
    ConflictError,
    EventLogCorrupted,
    NotFoundError,
    TransientError,
)
from leviathan_dagster.core.events.chain import genesis_hash
from leviathan_dagster.core.events.chain_check import ChainWalk, Damage, parse_event_body
from leviathan_dagster.core.events.model import Event, StoredEvent, VerifyReport
from leviathan_dagster.core.events.postgres.schema import CONFLICT_SQLSTATE, Tables
from leviathan_dagster.core.events.store import EventStore, canonical_bundle

if TYPE_CHECKING:
    from leviathan_dagster.core.projections.snapshot_shelves import PostgresShelf

CONNECT_TIMEOUT_S = 10
# A writer waits at most this long for the head row; then the append fails as transient and is retried.
HEAD_LOCK_TIMEOUT = "30s"
# A client that dies or hangs inside a transaction would hold the head lock and stall every writer;
# the server ends such a session after this long (an append's transaction lasts milliseconds).
IDLE_IN_TRANSACTION_TIMEOUT = "60s"
_STREAM_ROWS = 2000

T = TypeVar("T")


class PostgresEventLog(EventStore):
    """An :class:`EventStore` in two PostgreSQL tables named ``<table_prefix>_events`` / ``_head``.

    The tables are created if missing (idempotent DDL, serialised by an advisory lock so that many
    processes may start at once). ``log_id`` works as for NDJSON: it seeds the genesis hash, and
    opening an existing log under another id is refused. One instance holds one connection, guarded
    by a mutex; ``read`` and ``verify`` stream over a connection of their own.
    """

    # The server-side function an append calls, ``<table_prefix>_<append_function>`` (tests swap in
    # variants without the head lock to show what it prevents).
    append_function = "append"

    def __init__(
        self, dsn: str, *, log_id: str | None = None, table_prefix: str = "leviathan", read_only: bool = False
    ) -> None:
        if log_id is not None and (not isinstance(log_id, str) or not log_id):
            raise ConfigError(f"event log log_id must be a non-empty string, got {log_id!r}")
        self.tables = Tables(table_prefix)
        self._dsn = dsn
        self._mutex = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._append_sql = self.tables.call_append(self.append_function)
        self.read_only = read_only
        if read_only:  # a read command: create nothing, and say so when there is no log
            with self._mutex, self._translated("open the tables"):
                self.log_id, self.genesis = self._existing_identity(self._connection())
            return
        with self._mutex, self._translated("create the tables"):
            self.log_id, self.genesis = self._ensure_schema(self._connection(), log_id)

    def __repr__(self) -> str:
        return f"PostgresEventLog(table_prefix={self.tables.prefix!r}, log_id={self.log_id!r})"

    def close(self) -> None:
        """Close this instance's connection (it is reopened on next use)."""
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> PostgresEventLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Callers open a log per command and drop it; closing here ends the server session at once
        # (instead of whenever the socket is collected) and keeps psycopg from warning about it.
        conn = getattr(self, "_conn", None)
        if conn is not None and not conn.closed:
            conn.close()

    def projection_shelf(self) -> PostgresShelf:
        """Rows of ``<table_prefix>_projections`` in this log's database (read-only: never written)."""
        from leviathan_dagster.core.projections.snapshot_shelves import PostgresShelf

        return PostgresShelf(
            lambda: self._connect(autocommit=True),
            self.tables.name("projections"),
            writable=not self.read_only,
        )

    # -- writing ---------------------------------------------------------------------------------

    def append(self, events: Sequence[Event]) -> list[StoredEvent]:
        """Append the events not yet in the log in one transaction (see :class:`EventStore`).

        Raises :class:`InvalidEvent` or :class:`ConflictError` (nothing written) and
        :class:`TransientError` when the server or the connection fails (nothing written either: the
        transaction is rolled back, or never committed).
        """
        events = list(events)
        bodies = canonical_bundle(events)
        if self.read_only:
            raise TransientError(f"{self!r} was opened read-only; it cannot be appended to")
        if not events:
            return []
        # One statement, so one round trip and (autocommit) one transaction: the server-side function
        # locks the head row, checks the event_ids, chains, inserts and moves the head (see
        # postgres_schema for why the lock prevents forks). The commit waits for the WAL flush
        # (synchronous_commit is left as the server sets it): an append is durable before it returns.
        params = (
            [event.event_id for event in events],
            bodies,
            [event.event_type for event in events],
        )
        rows = self._on_shared_connection(
            "append", lambda conn: conn.execute(self._append_sql, params, prepare=True).fetchall()
        )
        return [
            StoredEvent(seq, event, prev_hash, hash_, body)
            for (seq, prev_hash, hash_), event, body in zip(rows, events, bodies, strict=True)
        ]

    # -- reading ---------------------------------------------------------------------------------

    def read(self, after_seq: int = 0) -> Iterator[StoredEvent]:
        """Events with ``seq > after_seq`` in order, streamed through a server-side cursor on a
        connection of its own (hashes are not re-checked; use :meth:`verify`)."""
        with self._streaming("read") as cur:
            cur.execute(self.tables.select_after, (after_seq,))
            for row in cur:
                yield _stored(*row)

    def get(self, event_id: str) -> StoredEvent | None:
        """The stored event with this ``event_id``, or None."""
        row = self._on_shared_connection(
            "get", lambda conn: conn.execute(self.tables.select_by_id, (event_id,)).fetchone()
        )
        return None if row is None else _stored(*row)

    def head(self) -> tuple[int, str]:
        """(last seq, last hash), or (0, genesis hash) for an empty log, from the head row."""
        row = self._on_shared_connection(
            "read the head", lambda conn: conn.execute(self.tables.select_head).fetchone()
        )
        assert row is not None, "the head row is created with the tables"
        return row[0], row[1]

    def verify(self, *, full: bool = True) -> VerifyReport:
        """Stream every row in seq order, recompute the chain and compare it with the head row.

        Reads one snapshot (REPEATABLE READ), so appends running meanwhile are simply not seen. Unlike a
        file, the table has a head stored apart from the events, so events deleted from the end are
        found too ("truncated"); the ``event_id`` column is checked against the stored body, since
        idempotency trusts it.
        """
        walk = ChainWalk(self.genesis, full=full)
        with self._streaming("verify", snapshot=True) as cur:
            head_seq, head_hash = cur.connection.execute(self.tables.select_head).fetchone() or (0, "")
            cur.execute(self.tables.select_for_verify)
            try:
                for seq, prev_hash, hash_, body, event_id, event_type in cur:
                    if seq > head_seq and seq == walk.count + 1:
                        raise Damage("inserted", f"seq {seq} is past the head row's seq {head_seq}")
                    walk.check(seq, prev_hash, hash_, body, (event_id, event_type))
                if walk.count < head_seq:
                    raise Damage(
                        "truncated",
                        f"the head row is at seq {head_seq} but the last event is seq {walk.count}: "
                        f"seq {walk.count + 1}..{head_seq} removed from the end",
                    )
            except Damage as damage:
                return walk.report(damage)
        if walk.head != head_hash:
            return VerifyReport(
                ok=False,
                events=max(walk.count - 1, 0),
                head_hash=head_hash,
                first_bad_seq=max(walk.count, 1),
                reason=f"the head row's hash is not the hash of seq {walk.count}: head row modified",
                kind="modified",
            )
        return walk.report()

    # -- connections, schema and errors ----------------------------------------------------------

    def _connect(self, *, autocommit: bool) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self._dsn, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.ProgrammingError as exc:  # a malformed DSN: the user's to fix, not a retry
            raise ConfigError(f"PostgreSQL event log: the DSN is not valid ({exc})") from None
        conn.isolation_level = IsolationLevel.READ_COMMITTED
        conn.execute(
            "SELECT set_config('lock_timeout', %s, false), "
            "set_config('idle_in_transaction_session_timeout', %s, false)",
            (HEAD_LOCK_TIMEOUT, IDLE_IN_TRANSACTION_TIMEOUT),
        )
        if not autocommit:
            conn.commit()
        return conn

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect(autocommit=True)
        return self._conn

    def _on_shared_connection(self, action: str, statement: Callable[[psycopg.Connection], T]) -> T:
        """``statement`` on the instance's connection, once more on a new one if the connection it
        found open had died meanwhile.

        A session the server ended while it sat idle (a restart, a failover, an idle timeout) is only
        found dead when it is next used, however long ago the server came back: without the second
        try every long-lived writer (a worker waiting on its test command, a code server) would fail
        its first call after any restart. Repeating is safe: reads change nothing, and an append is
        idempotent by event_id (and a dead session ran nothing). A connection opened by this call
        that fails is a real failure, raised as TransientError for the caller's own retries.
        """
        with self._mutex:
            reused = self._conn is not None and not self._conn.closed
            try:
                with self._translated(action):
                    return statement(self._connection())
            except TransientError:
                if not reused or self._conn is not None:  # opened now, or still usable: not stale
                    raise
            with self._translated(action):
                return statement(self._connection())

    @contextmanager
    def _streaming(self, action: str, *, snapshot: bool = False) -> Iterator[psycopg.ServerCursor]:
        # A connection per stream: a server-side cursor lives in a transaction, and holding one open on
        # the shared connection while the caller appends between two rows would mix the two.
        with self._translated(action):
            conn = self._connect(autocommit=False)
            try:
                conn.read_only = True
                if snapshot:
                    conn.isolation_level = IsolationLevel.REPEATABLE_READ
                with conn.cursor(name=f"leviathan_{action}_{uuid.uuid4().hex[:8]}") as cur:
                    cur.itersize = _STREAM_ROWS
                    yield cur
            finally:
                conn.close()

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """The one place psycopg errors become Leviathan's."""
        try:
            yield
        except errors.UniqueViolation as exc:
            if exc.diag.constraint_name == self.tables.name("events_event_id"):
                raise ConflictError(f"PostgreSQL event log: {action}: an event_id is already stored") from exc
            # seq or prev_hash taken: the head moved under a writer that did not lock it. Retrying reads
            # the new head, so this is a lost race, not a contradiction in the data.
            raise TransientError(f"PostgreSQL event log: {action}: the chain head moved ({exc})") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            # The server went away, killed our session, timed out a lock, or cancelled us. Whatever was in
            # flight was rolled back by the server; drop the connection and let the next call reconnect.
            if self._conn is not None and (self._conn.broken or self._conn.closed):
                self._conn = None
            raise TransientError(f"PostgreSQL event log: {action} failed: {exc}") from exc
        except psycopg.Error as exc:
            if exc.sqlstate != CONFLICT_SQLSTATE:
                raise
            # The append function found an event_id stored with other content, and wrote nothing.
            try:
                detail = json.loads(exc.diag.message_detail or "")
                event_id, seq = detail["event_id"], detail["seq"]
            except (ValueError, KeyError, TypeError):
                raise ConflictError(f"PostgreSQL event log: {action}: {exc}") from exc
            raise ConflictError(
                f"event_id {event_id!r} is already in the log at seq {seq} with other content; an "
                "event_id names one event forever (give the new event a new id)"
            ) from exc

    def _existing_identity(self, conn: psycopg.Connection) -> tuple[str, str]:
        head = self.tables.name("head")
        found = conn.execute("SELECT to_regclass(%s)", (head,)).fetchone()
        row = conn.execute(self.tables.select_identity).fetchone() if found and found[0] else None
        if row is None:
            raise NotFoundError(f"no event log at PostgreSQL table {head}")
        return row[0], row[1]

    def _ensure_schema(self, conn: psycopg.Connection, log_id: str | None) -> tuple[str, str]:
        # CREATE TABLE IF NOT EXISTS is not safe against itself: two sessions creating the same table
        # at once collide in the catalog. A transaction-scoped advisory lock, keyed on the prefix, makes
        # the creation and the first head row one step across every process opening this log.
        key = int.from_bytes(hashlib.sha256(self.tables.prefix.encode()).digest()[:8], "big", signed=True)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            conn.execute(self.tables.create)
            self._define_append(conn)
            row = conn.execute(self.tables.select_identity).fetchone()
            if row is None:
                new_id = log_id or str(uuid.uuid4())
                conn.execute(self.tables.insert_head, (new_id, genesis_hash(new_id), genesis_hash(new_id)))
                return new_id, genesis_hash(new_id)
        stored_id, genesis = row
        if log_id is not None and log_id != stored_id:
            raise ConfigError(
                f"PostgreSQL event log {self.tables.prefix!r}: log_id is {stored_id!r} but {log_id!r} was "
                "requested; these tables belong to another log"
            )
        if genesis != genesis_hash(stored_id):
            raise ConfigError(
                f"PostgreSQL event log {self.tables.prefix!r}: the head row's genesis is not its log_id's"
            )
        return stored_id, genesis

    def _define_append(self, conn: psycopg.Connection) -> None:
        """Inside ``_ensure_schema``'s locked transaction: the append function."""
        self._define_function(conn, "append", self.tables.define_append())

    def _define_function(self, conn: psycopg.Connection, function: str, definition: sql.Composed) -> None:
        """Create the function, or replace it if its body is not this version's.

        Only when needed: CREATE OR REPLACE rewrites the catalog row every time (making every session
        recompile the function) and is refused to a role that does not own it, such as a writer role
        allowed only to call it.
        """
        body = definition.as_string(conn).split("$append$")[1]
        query, signature = self.tables.select_function_source, self.tables.append_signature(function)
        row = conn.execute(query, (signature,)).fetchone()
        if row is None or row[0] != body:
            conn.execute(definition)


def _stored(seq: int, body: bytes, prev_hash: str, hash_: str) -> StoredEvent:
    try:
        event = parse_event_body(body)
    except ValueError as exc:
        raise EventLogCorrupted(seq, f"the body of seq {seq} is not an event ({exc}); run verify()") from None
    return StoredEvent(seq, event, prev_hash, hash_, body)
