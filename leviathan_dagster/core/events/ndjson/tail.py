"""The bytes after the NDJSON log's last newline: how readers describe them, and how the appender repairs.

Every append ends its single write with ``b"\\n"`` and fsyncs before it returns, so bytes after the last
newline come from an append that crashed (never acknowledged), or from damage done to the file later (an
editor that drops the final newline, a copy cut short, a disk error). A reader cannot tell which, so it
changes nothing and reports the range. Only the appender repairs, under the log's lock, and it never
destroys evidence:

- bytes that are one whole, correctly chained event missing only its newline are kept: the newline is
  added (removing the newline of an acknowledged ``attempt.succeeded`` must not make that fact vanish);
- anything else is copied to ``<log>.quarantine-<offset>-<sha256 prefix>`` beside the log (fsynced)
  before the log is cut back, and a ``log.tail_quarantined`` event records the file, offset, length and
  SHA-256 of what was moved, so the cut itself is in the chain.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from leviathan_dagster.core.events.chain import InvalidEvent, canonical_event_bytes, chain_hash
from leviathan_dagster.core.events.model import TAIL_QUARANTINED, Event, StoredEvent
from leviathan_dagster.core.events.ndjson.files import after_last_newline, write_atomically
from leviathan_dagster.core.events.ndjson.lines import BadLine, parse_line, split_line

REPAIR_ACTOR = "leviathan-event-log"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TornTail:
    """Bytes ``[start, end)`` of the log after its last newline.

    ``complete`` is the event they hold when they are one whole line, chained onto the line before,
    that lacks only its newline (the appender keeps it); None when they are a fragment (quarantined).
    """

    start: int
    end: int
    complete: StoredEvent | None = None

    @property
    def length(self) -> int:
        return self.end - self.start

    def describe(self) -> str:
        where = f"bytes {self.start}..{self.end} ({self.length} bytes) after the last newline"
        if self.complete is not None:
            return (
                f"torn tail: {where} hold seq {self.complete.seq}, complete and chained but missing its "
                "newline; the next append keeps it and adds the newline"
            )
        return (
            f"torn tail: {where} are not a complete event; the next append moves them to a quarantine "
            "file beside the log and records a log.tail_quarantined event"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "start": self.start,
            "end": self.end,
            "length": self.length,
            "complete_event_seq": self.complete.seq if self.complete is not None else None,
        }


def inspect_tail(fd: int, size: int, genesis: str) -> TornTail | None:
    """The torn tail of the first ``size`` bytes of the log open at ``fd``, or None if it ends cleanly."""
    if not size or os.pread(fd, 1, size - 1) == b"\n":
        return None
    start = after_last_newline(fd, size)
    raw = os.pread(fd, size - start, start)
    return TornTail(start, size, _complete_event(fd, start, raw, genesis))


def _complete_event(fd: int, start: int, raw: bytes, genesis: str) -> StoredEvent | None:
    try:
        stored = parse_line(raw + b"\n")
        if start == 0:
            prev_seq, prev_hash = 0, genesis
        else:
            prev_start = after_last_newline(fd, start - 1)
            seq, _, hash_, _ = split_line(os.pread(fd, start - prev_start, prev_start))
            prev_seq, prev_hash = seq, hash_.decode("latin-1")
        canonical = canonical_event_bytes(stored.event)
    except (BadLine, InvalidEvent):
        return None
    linked = stored.seq == prev_seq + 1 and stored.prev_hash == prev_hash
    if (
        not linked
        or canonical != stored.body
        or chain_hash(prev_hash, stored.seq, stored.body) != stored.hash
    ):
        return None
    return stored


def repair_tail(fd: int, path: Path, genesis: str) -> Event | None:
    """Repair a torn tail of the log open at ``fd`` (O_RDWR | O_APPEND, under the log's lock).

    Returns the ``log.tail_quarantined`` event the caller must append first when bytes were moved aside,
    else None. A crash between the quarantine copy and that event leaves the copy in place: the evidence
    survives even when its record does not.
    """
    tail = inspect_tail(fd, os.fstat(fd).st_size, genesis)
    if tail is None:
        return None
    if tail.complete is not None:
        logger.warning("event log %s: %s; adding the newline", path, tail.describe())
        os.write(fd, b"\n")
        os.fsync(fd)
        return None
    data = os.pread(fd, tail.length, tail.start)
    digest = hashlib.sha256(data).hexdigest()
    quarantine = Path(f"{path}.quarantine-{tail.start}-{digest[:16]}")
    write_atomically(quarantine, data)  # durable before the log loses the bytes
    os.ftruncate(fd, tail.start)
    os.fsync(fd)
    logger.warning(
        "event log %s: moved a torn tail of %d bytes (sha256 %s) to %s", path, len(data), digest, quarantine
    )
    return Event.new(
        TAIL_QUARANTINED,
        {"quarantine_file": quarantine.name, "offset": tail.start, "length": len(data), "sha256": digest},
        actor_id=REPAIR_ACTOR,
    )
