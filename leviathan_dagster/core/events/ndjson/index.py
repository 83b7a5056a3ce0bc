"""The NDJSON log's event_id index: which line holds each event_id, caught up incrementally.

Built on first need by one pass over the file, then extended from the last offset it has seen, so an
append pays only for the lines written since its previous call (by this process or any other).
"""

from __future__ import annotations

import os

from leviathan_dagster.core.errors import EventLogCorrupted
from leviathan_dagster.core.events.chain_check import event_id_of
from leviathan_dagster.core.events.model import StoredEvent
from leviathan_dagster.core.events.ndjson.lines import BadLine, parse_line, split_line

_CHUNK = 1 << 20


class EventIdIndex:
    """event_id -> byte offset of its line, for the complete lines in ``[0, end)`` of the log file.

    Only ever used under the log's lock: then no append is half-way through its write, every complete
    line below the file size was fsynced, and no other process shortens the file below ``end`` (a
    failed append only cuts its own, never-indexed lines; a torn-tail repair only bytes after the last
    newline, which the index never reads). Offsets rather than (seq, content hash): the duplicate path
    re-reads the stored line anyway, to compare its bytes exactly and to return the original event,
    and a bare int per event keeps the index small (about 150 bytes per event with a UUID id).
    """

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}
        self.end = 0
        self.lines = 0
        self.last_start = 0  # where the last indexed line starts
        # False once started past line 1 (``start_at``): such an index must never be snapshotted.
        self.whole = True
        self.snapshot_lines = 0  # lines indexed when the last snapshot was loaded or written

    @property
    def empty(self) -> bool:
        return self.end == 0 and not self.offsets

    def catch_up(self, fd: int, size: int) -> None:
        """Index the complete lines between ``end`` and ``size``."""
        if size < self.end:  # the file was replaced or cut behind our back: start over
            self.offsets.clear()
            self.end = self.lines = self.last_start = self.snapshot_lines = 0
            self.whole = True
        pending = b""
        pos = self.end
        while pos < size:
            chunk = os.pread(fd, min(_CHUNK, size - pos), pos)
            if not chunk:
                break
            pos += len(chunk)
            data = pending + chunk
            start = 0
            while (newline := data.find(b"\n", start)) >= 0:
                self._add_line(data[start : newline + 1])
                start = newline + 1
            pending = data[start:]

    def start_at(self, offset: int, lines: int) -> None:
        """Index only from ``offset`` (the start of line ``lines + 1``) on; only before any indexing."""
        if self.empty:
            self.end, self.lines, self.whole = offset, lines, False

    def add(self, event_id: str, line: bytes) -> None:
        """Record a line this process has just written at ``end``."""
        self.offsets.setdefault(event_id, self.end)
        self.last_start = self.end
        self.end += len(line)
        self.lines += 1

    def _add_line(self, raw: bytes) -> None:
        try:
            event_id = event_id_of(split_line(raw)[3])
        except (BadLine, ValueError) as exc:
            raise EventLogCorrupted(self.lines + 1, f"line {self.lines + 1} unparseable ({exc})") from None
        self.add(event_id, raw)


def read_line_at(fd: int, offset: int) -> StoredEvent:
    """The stored event whose line starts at ``offset``."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.pread(fd, 8192, offset + len(data))
        if not chunk:
            break
        newline = chunk.find(b"\n")
        data += chunk if newline < 0 else chunk[: newline + 1]
    try:
        return parse_line(data)
    except BadLine as exc:
        raise EventLogCorrupted(0, f"line at byte {offset} unparseable ({exc}); run verify()") from None
