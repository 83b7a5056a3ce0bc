"""Projection snapshots: a projection's fold state at one seq, so a new process need not refold years.

A snapshot is one file (or row) per projection and seq::

    {"format":"leviathan-projection-snapshot/v1","projection":"ledger","version":1,"log_id":"…",
     "seq":N,"hash":"<chain hash of the event at seq N>","body_sha256":"…","body_bytes":M}\\n
    <zlib-compressed JSON of the projection's ``to_state()``>

The body is JSON with sorted keys, no NaN, compact separators, compressed at a fixed level: the same
state always gives the same bytes, so ``events verify`` can check a snapshot by refolding the log to
its seq and comparing digests. Nothing is unpickled: the body is data, decoded by the projection's own
``from_state``.

Why a snapshot can be trusted: it is derived data, and it is used only when it still describes this
log. Before use, the header must name this format, this projection's state version and this log's
log_id; the log must hold an event at ``seq`` whose chain hash is ``hash`` (one indexed read, see
:func:`event_at`); the body must have the recorded length and SHA-256 and decode. The chain hash at
``seq`` commits to every event up to ``seq``, so a snapshot of a log that was since truncated, rewritten
or replaced by another log never matches. Anything that fails is skipped with one warning line and the
next older snapshot (or seq 0) is tried: a snapshot can cost a refold, never a wrong state.
What the chain hash cannot catch is a snapshot *body* forged by someone who can write the home (or the
snapshot table) and recomputed its SHA-256: such a person could also append events, but a forged
snapshot leaves no trace in the log. ``leviathan events verify`` therefore refolds the log up to each
kept snapshot and reports any whose state differs; deleting the snapshots is always safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from leviathan_dagster.core.events.model import StoredEvent
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.gc_pause import collector_paused

FORMAT = "leviathan-projection-snapshot/v1"
# A view writes a projection's snapshot once it has folded this many events past the one it loaded
# (or wrote) last: a new process then refolds at most about this many events, whatever the history.
SNAPSHOT_EVERY = 10_000
# Snapshots kept per projection (the newest); older ones are deleted after each write.
KEEP = 3
_COMPRESSION_LEVEL = 6

logger = logging.getLogger(__name__)


class SnapshotInvalid(Exception):
    """A snapshot that must not be used (the message says why, in one line)."""


class SnapshotUseless(SnapshotInvalid):
    """A snapshot no reader of this log can ever use (corrupt, or of another history): a writable
    shelf deletes it. Without that, the stale snapshots of a restored log, which stand at higher seqs
    than the new ones, would be kept by ``prune`` and tried (and warned about) by every process."""


@dataclass(frozen=True)
class SnapshotKey:
    projection: str
    seq: int
    hash: str


class SnapshotShelf(Protocol):
    """Where one log's snapshots are kept (a folder beside the NDJSON log, a PostgreSQL table)."""

    writable: bool

    def keys(self, projection: str) -> list[SnapshotKey]:
        """The snapshots of ``projection``, newest (highest seq) first."""
        ...

    def load(self, key: SnapshotKey) -> bytes | None: ...

    def save(self, key: SnapshotKey, data: bytes) -> None:
        """Store atomically (a reader sees the whole snapshot or none); replace one at the same seq."""
        ...

    def prune(self, projection: str, keep: int) -> None:
        """Delete all but the ``keep`` newest snapshots of ``projection``."""
        ...

    def delete(self, key: SnapshotKey) -> None: ...

    def describe(self, key: SnapshotKey) -> str: ...


@dataclass(frozen=True)
class Codec:
    """How one projection becomes snapshot state and back."""

    version: str
    to_state: Callable[[Any], Any]
    from_state: Callable[[Any], Any]


def state_json(state: Any) -> bytes:
    """Deterministic JSON of a state (sorted keys, compact): equal states give equal bytes."""
    text = json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def encode_state(state: Any) -> bytes:
    """:func:`state_json`, compressed at a fixed level."""
    return zlib.compress(state_json(state), _COMPRESSION_LEVEL)


def encode_snapshot(key: SnapshotKey, version: str, log_id: str, state: Any) -> bytes:
    body = encode_state(state)
    header = {
        "format": FORMAT,
        "projection": key.projection,
        "version": version,
        "log_id": log_id,
        "seq": key.seq,
        "hash": key.hash,
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_bytes": len(body),
    }
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n" + body


def decode_snapshot(data: bytes, key: SnapshotKey, version: str, log_id: str) -> Any:
    """The state in ``data`` if its header and body are what ``key`` names; else :class:`SnapshotInvalid`.
    (Whether the log still holds ``key.hash`` at ``key.seq`` is the caller's check.)"""
    line, newline, body = data.partition(b"\n")
    try:
        header = json.loads(line) if newline else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise SnapshotUseless("no readable header (a torn or foreign file)")
    if header.get("format") != FORMAT:
        raise SnapshotInvalid(f"format {header.get('format')!r} is not {FORMAT!r}")
    if header.get("version") != version:
        raise SnapshotInvalid(f"state version {header.get('version')!r}, this code reads {version!r}")
    expected = {"projection": key.projection, "seq": key.seq, "hash": key.hash, "log_id": log_id}
    for name, value in expected.items():
        if header.get(name) != value:
            raise SnapshotUseless(f"header {name} {header.get(name)!r} is not {value!r}")
    if header.get("body_bytes") != len(body) or header.get("body_sha256") != hashlib.sha256(body).hexdigest():
        raise SnapshotUseless("its body does not match the length and SHA-256 in its header (corrupt)")
    try:
        return json.loads(zlib.decompress(body))
    except (zlib.error, ValueError) as exc:
        raise SnapshotUseless(f"its body does not decode ({exc})") from None


def event_at(store: EventStore, seq: int) -> StoredEvent | None:
    """The stored event with ``seq`` (one indexed read: NDJSON bisects, PostgreSQL uses its key)."""
    if seq <= 0:
        return None
    events = store.read(after_seq=seq - 1)
    try:
        stored = next(events, None)
    finally:
        close_reader(events)
    return stored if stored is not None and stored.seq == seq else None


def load_newest(
    store: EventStore,
    shelf: SnapshotShelf,
    name: str,
    codec: Codec,
    log_id: str,
) -> Any | None:
    """The projection ``name`` from its newest snapshot that still matches ``store``'s log, or None.
    Every snapshot passed over is reported in one warning line (and deleted, when useless forever)."""
    for key in shelf.keys(name):
        try:
            stored = event_at(store, key.seq)
            if stored is None:
                # A writer snapshots only events it read, which every reader sees from then on.
                raise SnapshotUseless(f"the log has no event at seq {key.seq} (truncated or replaced)")
            if stored.hash != key.hash:
                raise SnapshotUseless(
                    f"the log's chain hash at seq {key.seq} differs (rewritten or other log)"
                )
            data = shelf.load(key)
            if data is None:
                raise SnapshotInvalid("it vanished while being read")
            # An allocation burst the size of the history, without cycles: see core/gc_pause.py
            # (measured at 100k events: the ledger's load took 1.7 s with the collector on).
            with collector_paused():
                projection = codec.from_state(decode_snapshot(data, key, codec.version, log_id))
            if projection.last_seq != key.seq:
                raise SnapshotInvalid(f"its state stands at seq {projection.last_seq}, not {key.seq}")
            return projection
        except SnapshotUseless as exc:
            logger.warning(
                "ignoring projection snapshot %s: %s%s", shelf.describe(key), exc, _removed(shelf, key)
            )
        except SnapshotInvalid as exc:
            logger.warning("ignoring projection snapshot %s: %s", shelf.describe(key), exc)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            logger.warning(
                "ignoring projection snapshot %s: its state does not fit (%r)", shelf.describe(key), exc
            )
    return None


def _removed(shelf: SnapshotShelf, key: SnapshotKey) -> str:
    if not shelf.writable:
        return ""  # a read-only process changes nothing, not even a useless cache
    try:
        shelf.delete(key)
    except OSError:
        return ""
    return " (deleted)"


def save(shelf: SnapshotShelf, key: SnapshotKey, codec: Codec, log_id: str, projection: Any) -> bool:
    """Write ``projection``'s snapshot and prune old ones; a failure is a warning (a cache, not state)."""
    try:
        shelf.save(key, encode_snapshot(key, codec.version, log_id, codec.to_state(projection)))
        shelf.prune(key.projection, KEEP)
    except OSError as exc:
        logger.warning("could not write projection snapshot %s: %s", shelf.describe(key), exc)
        return False
    return True


def close_reader(events: Iterator[StoredEvent]) -> None:
    # Reading often stops early: close the store's generator now so its file or cursor is released.
    close = getattr(events, "close", None)
    if close is not None:
        close()
