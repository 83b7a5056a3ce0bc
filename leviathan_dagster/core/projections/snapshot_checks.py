"""``events verify``'s check of the projection snapshots: refold the log and compare.

Loading a snapshot checks that it describes this log (chain hash at its seq, format, checksum), which
catches damage and staleness but not a body forged by someone who can write the snapshots and re-seal
them. This check closes that gap: one pass over the log folds every projection from seq 0 and, at each
kept snapshot's seq, compares the fold's state with the snapshot's, byte for byte (``state_json``).
"""

from __future__ import annotations

from dataclasses import dataclass

from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.projections.log_view import _FACTORIES, CODECS
from leviathan_dagster.core.projections.snapshots import (
    SnapshotInvalid,
    SnapshotKey,
    close_reader,
    decode_snapshot,
    state_json,
)

DIFFERS = "differs from the log refolded to its seq"


@dataclass(frozen=True)
class SnapshotCheck:
    key: SnapshotKey
    where: str
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_snapshots(store: EventStore) -> list[SnapshotCheck]:
    """Every kept snapshot of ``store``'s log, checked against a refold (oldest first)."""
    shelf = store.projection_shelf()
    log_id = getattr(store, "log_id", None)
    if shelf is None or not log_id:
        return []
    keys = sorted((key for name in CODECS for key in shelf.keys(name)), key=lambda k: (k.seq, k.projection))
    if not keys:
        return []
    folds = {name: _FACTORIES[name]() for name in {key.projection for key in keys}}
    checks: list[SnapshotCheck] = []
    pending = list(keys)
    events = store.read()
    try:
        for stored in events:
            if not pending:
                break
            for fold in folds.values():
                fold.apply((stored,))
            while pending and pending[0].seq == stored.seq:
                key = pending.pop(0)
                checks.append(_check(shelf, key, log_id, stored.hash, folds[key.projection]))
            while pending and pending[0].seq < stored.seq:  # a seq the log does not hold
                key = pending.pop(0)
                checks.append(SnapshotCheck(key, shelf.describe(key), "the log has no event at its seq"))
    finally:
        close_reader(events)
    checks.extend(SnapshotCheck(k, shelf.describe(k), "the log has no event at its seq") for k in pending)
    return checks


def _check(shelf, key: SnapshotKey, log_id: str, log_hash: str, fold) -> SnapshotCheck:
    where = shelf.describe(key)
    if log_hash != key.hash:
        return SnapshotCheck(key, where, "the log's chain hash at its seq differs")
    codec = CODECS[key.projection]
    data = shelf.load(key)
    try:
        if data is None:
            raise SnapshotInvalid("it vanished while being read")
        state = decode_snapshot(data, key, codec.version, log_id)
    except SnapshotInvalid as exc:
        return SnapshotCheck(key, where, str(exc))
    if state_json(state) != state_json(codec.to_state(fold)):
        return SnapshotCheck(key, where, DIFFERS)
    return SnapshotCheck(key, where)
