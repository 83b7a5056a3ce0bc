"""The PostgreSQL event log's two tables, its append function and its statements, named after a prefix.

``<prefix>_events`` holds one row per event; ``<prefix>_head`` holds exactly one row: the log's identity
and the chain head. ``<prefix>_append(event_ids, bodies, event_types)`` is the whole of an append, run by
the server in one statement (one round trip, one transaction). Constraint names are fixed so that errors
can be told apart by name; a reused event_id is reported under its own SQLSTATE, ``CONFLICT_SQLSTATE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql

from leviathan_dagster.core.errors import ConfigError

_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")

# Raised by the append function for an event_id already stored with other content (nothing is written:
# the error aborts the statement's transaction). Class "LV" is ours; PostgreSQL uses no such class.
CONFLICT_SQLSTATE = "LV409"

_DDL = """
CREATE TABLE IF NOT EXISTS {events} (
    seq bigint NOT NULL CONSTRAINT {seq_key} PRIMARY KEY CHECK (seq > 0),
    event_id text NOT NULL CONSTRAINT {event_id_key} UNIQUE,
    event_type text NOT NULL,
    body bytea NOT NULL,
    prev_hash text NOT NULL CONSTRAINT {prev_hash_key} UNIQUE,
    hash text NOT NULL
);
CREATE TABLE IF NOT EXISTS {head} (
    only_row boolean NOT NULL DEFAULT true PRIMARY KEY CHECK (only_row),
    log_id text NOT NULL,
    genesis text NOT NULL,
    head_seq bigint NOT NULL,
    head_hash text NOT NULL
);
"""

# An append, inside the one transaction of the statement that calls it. Returns one row per input event,
# in input order: (seq, prev_hash, hash), the original row's for an event_id already stored with the same
# body. The chain is computed exactly as chain.chain_hash does:
#   hash = sha256(prev_hash bytes || seq as 8 bytes big-endian (int8send) || sha256(body)), in hex.
# VOLATILE (the default), so in READ COMMITTED every statement below takes a fresh snapshot: the id check
# runs after the lock is granted and sees every append committed before it.
_APPEND_FUNCTION = """
CREATE OR REPLACE FUNCTION {function}(event_ids text[], bodies bytea[], event_types text[])
RETURNS TABLE (out_seq bigint, out_prev_hash text, out_hash text)
LANGUAGE plpgsql
AS $append$
DECLARE
    n integer := coalesce(cardinality(event_ids), 0);
    head_seq_ bigint;
    head_hash_ text;
    moved boolean := false;
    old record;
BEGIN
    IF coalesce(cardinality(bodies), 0) <> n OR coalesce(cardinality(event_types), 0) <> n THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'event_ids, bodies and event_types must have the same length';
    END IF;
    -- The head row lock is the whole of the concurrency story. Every append takes it first, with
    -- SELECT ... FOR UPDATE, and holds it until COMMIT, so appends run one after another: each reads
    -- the head the previous one committed (READ COMMITTED re-reads a row updated while we waited),
    -- checks its event_ids against every event committed so far, inserts seq n+1... and moves the
    -- head. Without it two writers would read the same head (n, h) and both build seq n+1 on h: a
    -- fork. The unique seq and prev_hash columns would then refuse the second insert, so the table
    -- itself never forks, but the second writer would fail an append it had every right to make, and
    -- two retries of one bundle could both miss each other's rows. The lock turns those races into a
    -- short wait; the constraints stay as the last line of defence against any writer that does not
    -- take it.
    SELECT h.head_seq, h.head_hash INTO head_seq_, head_hash_ FROM {head} AS h {lock};
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = 'the event log head row is missing';
    END IF;{pause}
    FOR i IN 1 .. n LOOP
        SELECT e.seq, e.body, e.prev_hash, e.hash INTO old
            FROM {events} AS e WHERE e.event_id = event_ids[i] AND {check_ids};
        IF FOUND THEN
            IF old.body <> bodies[i] THEN
                RAISE EXCEPTION USING ERRCODE = '{conflict}',
                    MESSAGE = 'an event_id is already stored with other content',
                    DETAIL = json_build_object('event_id', event_ids[i], 'seq', old.seq)::text;
            END IF;
            out_seq := old.seq;
            out_prev_hash := old.prev_hash;
            out_hash := old.hash;
        ELSE
            head_seq_ := head_seq_ + 1;
            out_seq := head_seq_;
            out_prev_hash := head_hash_;
            out_hash := encode(
                sha256(decode(head_hash_, 'hex') || int8send(head_seq_) || sha256(bodies[i])), 'hex'
            );
            INSERT INTO {events} (seq, event_id, event_type, body, prev_hash, hash)
                VALUES (head_seq_, event_ids[i], event_types[i], bodies[i], head_hash_, out_hash);
            head_hash_ := out_hash;
            moved := true;
        END IF;
        RETURN NEXT;
    END LOOP;
    IF moved THEN
        UPDATE {head} SET head_seq = head_seq_, head_hash = head_hash_;
    END IF;
END
$append$
"""


@dataclass(frozen=True)
class Tables:
    """Identifiers and statements for one table prefix (validated: it is spliced into SQL as a name)."""

    prefix: str

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not _PREFIX_RE.match(self.prefix):
            raise ConfigError(
                f"event log table_prefix {self.prefix!r} is not allowed: use 1-41 lowercase letters, "
                "digits and '_', starting with a letter or '_' (e.g. 'leviathan')"
            )

    def name(self, suffix: str) -> str:
        return f"{self.prefix}_{suffix}"

    def _format(self, template: str, **extra: sql.Composable) -> sql.Composed:
        return sql.SQL(template).format(
            events=sql.Identifier(self.name("events")),
            head=sql.Identifier(self.name("head")),
            seq_key=sql.Identifier(self.name("events_seq")),
            event_id_key=sql.Identifier(self.name("events_event_id")),
            prev_hash_key=sql.Identifier(self.name("events_prev_hash")),
            **extra,
        )

    @property
    def create(self) -> sql.Composed:
        """The tables; idempotent (the append function is defined apart, see ``define_append``)."""
        return self._format(_DDL)

    def append_signature(self, function: str = "append") -> str:
        """``<prefix>_<function>(text[], bytea[], text[])``, for ``to_regprocedure`` (the prefix is a
        plain lowercase name, so it needs no quoting)."""
        return f"{self.name(function)}(text[], bytea[], text[])"

    @property
    def select_function_source(self) -> sql.SQL:
        return sql.SQL("SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure(%s)")

    def define_append(
        self, function: str = "append", *, lock_head: bool = True, check_ids: bool = True
    ) -> sql.Composed:
        """``CREATE OR REPLACE FUNCTION <prefix>_<function>``: the append.

        Only tests turn the flags off, to show what they prevent: without ``lock_head`` the head is read
        plainly and a 2 ms pause gives a racing writer time to read the same head; without
        ``check_ids`` stored event_ids are not looked up, leaving duplicates to the unique constraint.
        """
        pause = "" if lock_head else "\n    PERFORM pg_sleep(0.002);  -- unlocked (tests only): invite a race"
        return self._format(
            _APPEND_FUNCTION,
            function=sql.Identifier(self.name(function)),
            lock=sql.SQL("FOR UPDATE" if lock_head else ""),
            pause=sql.SQL(pause),
            check_ids=sql.SQL("true" if check_ids else "false"),
            conflict=sql.SQL(CONFLICT_SQLSTATE),
        )

    def call_append(self, function: str = "append") -> sql.Composed:
        return sql.SQL(
            "SELECT out_seq, out_prev_hash, out_hash FROM {}(%s::text[], %s::bytea[], %s::text[])"
        ).format(sql.Identifier(self.name(function)))

    @property
    def select_identity(self) -> sql.Composed:
        return self._format("SELECT log_id, genesis FROM {head}")

    @property
    def insert_head(self) -> sql.Composed:
        return self._format(
            "INSERT INTO {head} (log_id, genesis, head_seq, head_hash) VALUES (%s, %s, 0, %s) "
            "ON CONFLICT DO NOTHING"
        )

    @property
    def select_head(self) -> sql.Composed:
        return self._format("SELECT head_seq, head_hash FROM {head}")

    @property
    def select_by_id(self) -> sql.Composed:
        return self._format("SELECT seq, body, prev_hash, hash FROM {events} WHERE event_id = %s")

    @property
    def select_after(self) -> sql.Composed:
        return self._format("SELECT seq, body, prev_hash, hash FROM {events} WHERE seq > %s ORDER BY seq")

    @property
    def select_for_verify(self) -> sql.Composed:
        return self._format(
            "SELECT seq, prev_hash, hash, body, event_id, event_type FROM {events} ORDER BY seq"
        )
