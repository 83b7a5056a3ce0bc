"""Snapshots of the NDJSON log's event_id index, so a new process's first append does not parse the
whole file to check its event ids for duplicates.

The index (event_id -> byte offset of its line) is derived from the file alone, like a projection, and
is kept on the same shelf (``<log>.projections/event_ids-<seq>-<hash>.snapshot``, same format and
checks: see ``core/projections/snapshots``). A snapshot is used only when the line it ends with is,
at the same byte offset in this file, the event with the recorded seq and chain hash: the chain hash
commits to every event before it, and the writer's line encoding is deterministic, so every offset
below it is the offset in this file. Anything else (another log, a cut or rewritten file, damage) is
skipped with a warning and the index is built by the usual pass over the file.
"""

from __future__ import annotations

import logging
import os
from itertools import accumulate
from typing import TYPE_CHECKING

from leviathan_dagster.core.events.ndjson.index import EventIdIndex
from leviathan_dagster.core.events.ndjson.lines import BadLine, parse_line

if TYPE_CHECKING:
    from leviathan_dagster.core.projections.snapshots import SnapshotShelf

NAME = "event_ids"
VERSION = "1"

logger = logging.getLogger(__name__)


def seed_index(index: EventIdIndex, fd: int, size: int, shelf: SnapshotShelf, log_id: str) -> None:
    """Fill an empty ``index`` from the newest snapshot that matches the file (else leave it empty)."""
    from leviathan_dagster.core.gc_pause import collector_paused
    from leviathan_dagster.core.projections.snapshots import SnapshotInvalid, decode_snapshot

    for key in shelf.keys(NAME):
        try:
            data = shelf.load(key)
            if data is None:
                raise SnapshotInvalid("it vanished while being read")
            with collector_paused():  # an allocation burst the size of the history: core/gc_pause.py
                state = decode_snapshot(data, key, VERSION, log_id)
                _check_last_line(fd, size, state, key.seq, key.hash)
                ids, starts = state["ids"], list(accumulate(state["deltas"]))
                if len(ids) != len(starts):
                    raise SnapshotInvalid("its ids and offsets differ in number")
                index.offsets = dict(zip(ids, starts, strict=True))  # unique: they were a dict's keys
            index.end, index.lines, index.last_start = state["end"], state["lines"], state["last_start"]
            index.snapshot_lines = index.lines
            return
        except SnapshotInvalid as exc:
            logger.warning("ignoring event_id index snapshot %s: %s", shelf.describe(key), exc)
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning(
                "ignoring event_id index snapshot %s: its state does not fit (%r)", shelf.describe(key), exc
            )


def _check_last_line(fd: int, size: int, state: dict, seq: int, hash_: str) -> None:
    from leviathan_dagster.core.projections.snapshots import SnapshotInvalid

    start, end = state["last_start"], state["end"]
    if state["lines"] != seq or not 0 <= start < end <= size:
        raise SnapshotInvalid(f"it covers bytes this file does not hold (end {end}, file {size})")
    line = os.pread(fd, end - start, start)
    try:
        stored = parse_line(line) if line.endswith(b"\n") and line.count(b"\n") == 1 else None
    except BadLine:
        stored = None
    if stored is None or stored.seq != seq or stored.hash != hash_:
        raise SnapshotInvalid(f"the file's line at byte {start} is not seq {seq} with its chain hash")


def snapshot_index(index: EventIdIndex, fd: int, shelf: SnapshotShelf, log_id: str, every: int) -> None:
    """Write the index's snapshot once it has indexed ``every`` lines past its last one."""
    from leviathan_dagster.core.projections.snapshots import KEEP, SnapshotKey, encode_snapshot

    if not shelf.writable or not index.whole or index.lines - index.snapshot_lines < every or not index.lines:
        return
    line = os.pread(fd, index.end - index.last_start, index.last_start)
    try:
        stored = parse_line(line)
    except BadLine:
        return
    starts = list(index.offsets.values())
    state = {
        "ids": list(index.offsets),
        "deltas": [starts[0], *(b - a for a, b in zip(starts, starts[1:], strict=False))] if starts else [],
        "end": index.end,
        "lines": index.lines,
        "last_start": index.last_start,
    }
    key = SnapshotKey(NAME, stored.seq, stored.hash)
    index.snapshot_lines = index.lines  # one try per ``every`` lines, written or not
    try:
        shelf.save(key, encode_snapshot(key, VERSION, log_id, state))
        shelf.prune(NAME, KEEP)
    except OSError as exc:
        logger.warning("could not write event_id index snapshot %s: %s", shelf.describe(key), exc)
