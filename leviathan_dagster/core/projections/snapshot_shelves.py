"""Where projection snapshots are kept: a folder beside an NDJSON log, a table beside a PostgreSQL log.

Each backend's ``projection_shelf()`` returns one of these. A shelf of a store opened read-only
(``read_only=True``: the read commands) is not writable: snapshots are derived data, but a read command
never creates anything, not even a cache. Every other process that folds the log keeps them current.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leviathan_dagster.core.projections.snapshots import SnapshotKey

logger = logging.getLogger(__name__)

_NAME = re.compile(r"(?P<projection>[a-z_]+)-(?P<seq>[0-9]{12})-(?P<hash>[0-9a-f]{64})\.snapshot")


class DirectoryShelf:
    """``<log>.projections/<projection>-<seq:012d>-<hash>.snapshot``: beside the log file it describes,
    so two logs never share snapshots and deleting a log's files deletes its snapshots too."""

    def __init__(self, root: Path, *, writable: bool) -> None:
        self.root = root
        self.writable = writable

    def keys(self, projection: str) -> list[SnapshotKey]:
        try:
            names = os.listdir(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for name in names:
            match = _NAME.fullmatch(name)
            if match and match["projection"] == projection:
                found.append(SnapshotKey(projection, int(match["seq"]), match["hash"]))
        return sorted(found, key=lambda key: key.seq, reverse=True)

    def path(self, key: SnapshotKey) -> Path:
        return self.root / f"{key.projection}-{key.seq:012d}-{key.hash}.snapshot"

    def describe(self, key: SnapshotKey) -> str:
        return str(self.path(key))

    def load(self, key: SnapshotKey) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def save(self, key: SnapshotKey, data: bytes) -> None:
        # Only inside a folder whose log exists (the log's parent): a snapshot never creates a home.
        if not self.root.parent.is_dir():
            raise FileNotFoundError(f"{self.root.parent} does not exist")
        self.root.mkdir(exist_ok=True)
        final = self.path(key)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            # No fsync: a snapshot lost or torn by a crash fails its checksum and costs a refold.
            tmp.write_bytes(data)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def prune(self, projection: str, keep: int) -> None:
        for key in self.keys(projection)[keep:]:
            self.delete(key)

    def delete(self, key: SnapshotKey) -> None:
        self.path(key).unlink(missing_ok=True)


class PostgresShelf:
    """Rows of ``<table_prefix>_projections`` (created on the first write), in the log's database, so
    every pod that reads the log finds them, whatever its home. Database errors are warnings: a
    snapshot that cannot be read or written costs a refold, never a failed tick."""

    def __init__(self, connect: Callable[[], Any], table: str, *, writable: bool) -> None:
        self._connect = connect
        self.table = table
        self.writable = writable

    def describe(self, key: SnapshotKey) -> str:
        return f"{self.table}({key.projection}, seq {key.seq})"

    def keys(self, projection: str) -> list[SnapshotKey]:
        rows = self._query(
            "SELECT seq, hash FROM {table} WHERE projection = %s ORDER BY seq DESC", (projection,)
        )
        return [SnapshotKey(projection, seq, hash_) for seq, hash_ in rows or ()]

    def load(self, key: SnapshotKey) -> bytes | None:
        rows = self._query(
            "SELECT body FROM {table} WHERE projection = %s AND seq = %s AND hash = %s",
            (key.projection, key.seq, key.hash),
        )
        return bytes(rows[0][0]) if rows else None

    def save(self, key: SnapshotKey, data: bytes) -> None:
        import psycopg
        from psycopg import sql

        table = sql.Identifier(self.table)
        try:
            with self._connect() as conn, conn.transaction():
                # Serialised like the log's own DDL: CREATE TABLE IF NOT EXISTS races with itself.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (projection text NOT NULL, seq bigint NOT NULL, "
                        "hash text NOT NULL, body bytea NOT NULL, "
                        "written_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (projection, seq))"
                    ).format(table)
                )
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (projection, seq, hash, body) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (projection, seq) DO UPDATE SET hash = EXCLUDED.hash, "
                        "body = EXCLUDED.body, written_at = now()"
                    ).format(table),
                    (key.projection, key.seq, key.hash, data),
                )
        except psycopg.Error as exc:
            raise OSError(f"PostgreSQL: {exc}") from exc

    def prune(self, projection: str, keep: int) -> None:
        import psycopg
        from psycopg import sql

        try:
            with self._connect() as conn:
                conn.execute(
                    sql.SQL(
                        "DELETE FROM {0} WHERE projection = %s AND seq NOT IN "
                        "(SELECT seq FROM {0} WHERE projection = %s ORDER BY seq DESC LIMIT %s)"
                    ).format(sql.Identifier(self.table)),
                    (projection, projection, keep),
                )
        except psycopg.Error as exc:
            raise OSError(f"PostgreSQL: {exc}") from exc

    def delete(self, key: SnapshotKey) -> None:
        import psycopg
        from psycopg import sql

        try:
            with self._connect() as conn:
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE projection = %s AND seq = %s AND hash = %s").format(
                        sql.Identifier(self.table)
                    ),
                    (key.projection, key.seq, key.hash),
                )
        except psycopg.Error as exc:
            raise OSError(f"PostgreSQL: {exc}") from exc

    def _query(self, template: str, params: tuple) -> list[tuple] | None:
        import psycopg
        from psycopg import sql

        query = sql.SQL(template).format(table=sql.Identifier(self.table))
        try:
            with self._connect() as conn:
                found = conn.execute("SELECT to_regclass(%s)", (self.table,)).fetchone()
                if not found or found[0] is None:
                    return None  # no snapshot written yet (the table comes with the first)
                return conn.execute(query, params).fetchall()
        except psycopg.Error as exc:
            logger.warning("projection snapshots in %s cannot be read: %s", self.table, exc)
            return None
