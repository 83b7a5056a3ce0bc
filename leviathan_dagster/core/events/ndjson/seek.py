"""Finding the line of a seq in the NDJSON log without reading the lines before it.

Line ``n`` of a sound log holds seq ``n`` and starts with ``{"seq":n,``, so the seqs grow with the byte
offset and the line that follows ``after_seq`` can be found by bisecting the file: about 30 probes of a
few kilobytes each for a gigabyte, whatever the history. A reader of "what was appended since seq N"
(the incremental projections, a worker's duplicate check) then costs what it reads, not the log's size.

The bisection trusts the seqs it probes only as a way to *find* a line; callers still check that the
lines they read carry consecutive seqs from ``after_seq + 1``, and fall back to a scan from byte 0 when
a probe lands on a line it cannot read (damage is reported as it always was, by the scan or verify).
"""

from __future__ import annotations

import os
import re

_PROBE = 4096
_SEQ_PREFIX = re.compile(rb'\{"seq":([1-9][0-9]{0,18}),')


def offset_after_seq(fd: int, end: int, after_seq: int) -> int | None:
    """Byte offset of the first line whose seq is greater than ``after_seq`` (``end`` if none), within
    the first ``end`` bytes; None if a probed line is unreadable (the caller scans instead)."""
    if after_seq <= 0 or end == 0:
        return 0
    lo, hi = 0, end
    # Smallest position p whose next line start holds a seq > after_seq; positions past the last
    # complete line count as "greater" (there is nothing more to read).
    while lo < hi:
        mid = (lo + hi) // 2
        probe = _seq_of_line_from(fd, mid, end)
        if probe is None:
            return None
        if probe[1] is None or probe[1] > after_seq:
            hi = mid
        else:
            lo = mid + 1
    found = _seq_of_line_from(fd, lo, end)
    if found is None:
        return None
    return found[0]


def _seq_of_line_from(fd: int, pos: int, end: int) -> tuple[int, int | None] | None:
    """(start, seq) of the first line starting at or after ``pos``; seq None past the last complete
    line; None for a line that does not start like an event record."""
    start = pos if pos == 0 else _next_line_start(fd, pos - 1, end)
    if start >= end:
        return end, None
    head = os.pread(fd, 40, start)
    if b"\n" not in head and start + len(head) >= end:
        return end, None  # a torn tail: not an event
    match = _SEQ_PREFIX.match(head)
    if match is None:
        return None
    return start, int(match.group(1))


def _next_line_start(fd: int, pos: int, end: int) -> int:
    """The offset just after the first newline at or after ``pos`` (``end`` if there is none)."""
    while pos < end:
        chunk = os.pread(fd, min(_PROBE, end - pos), pos)
        if not chunk:
            return end
        newline = chunk.find(b"\n")
        if newline >= 0:
            return pos + newline + 1
        pos += len(chunk)
    return end
