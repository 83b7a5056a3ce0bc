"""The event log as one NDJSON file: one event per line, hash-chained, safe for several processes.

Files, for a log at ``events.ndjson``:

- ``events.ndjson``: one line per event, ``{"seq":N,"prev_hash":"…","hash":"…","event":<canonical bytes>}``
  with the event's RFC 8785 bytes embedded verbatim (see ``ndjson_lines``).
- ``events.ndjson.meta.json``: ``{"format": "leviathan-ndjson/v2", "log_id": ...}``; the log_id seeds the
  genesis hash, so this file is part of the chain's identity.
- ``events.ndjson.lock``: an empty file that writers ``flock``; never deleted (see ``_locked``).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from leviathan_dagster.core.errors import ConflictError, EventLogCorrupted, TransientError
from leviathan_dagster.core.events.chain import canonical_event_bytes, chain_hash, genesis_hash
from leviathan_dagster.core.events.chain_check import ChainWalk, Damage
from leviathan_dagster.core.events.model import Event, StoredEvent, VerifyReport
from leviathan_dagster.core.events.ndjson.files import (
    after_last_newline,
    count_newlines,
    fsync_dir,
    load_or_create_meta,
)
from leviathan_dagster.core.events.ndjson.index import EventIdIndex, read_line_at
from leviathan_dagster.core.events.ndjson.lines import BadLine, encode_line, parse_line, split_line
from leviathan_dagster.core.events.ndjson.seek import offset_after_seq
from leviathan_dagster.core.events.ndjson.tail import TornTail, inspect_tail, repair_tail
from leviathan_dagster.core.events.store import EventStore, canonical_bundle, check_same_content

if TYPE_CHECKING:
    from leviathan_dagster.core.projections.snapshot_shelves import DirectoryShelf

FORMAT = "leviathan-ndjson/v2"
# The event_id index is snapshotted every this many lines, and a log smaller than this many bytes
# (a few thousand events) is indexed by reading it: a snapshot would not save anything there.
INDEX_SNAPSHOT_EVERY = 10_000
INDEX_SNAPSHOT_MIN_BYTES = 1 << 20
_HEX64 = re.compile(rb"[0-9a-f]{64}")

logger = logging.getLogger(__name__)


class NdjsonEventLog(EventStore):
    """An :class:`EventStore` in one append-only NDJSON file.

    ``append`` holds an exclusive lock on ``<path>.lock`` while it reads the head, writes and fsyncs,
    so any number of processes may append to the same file without forking the chain. Readers
    (``read``, ``head``, ``verify``) take the same lock only to note the file's size, then read without
    it: they see exactly the events whose append had returned by then.

    Readers never write: opening, reading and verifying leave every byte as it was. Bytes after the last
    newline (a torn tail) are reported (:meth:`torn_tail`, ``verify``'s ``torn`` report with the byte
    range, a warning from ``read``); only ``append`` repairs them, keeping a complete event that lost
    its newline and quarantining anything else (see ``ndjson_tail``). ``read_only=True`` also refuses
    to create anything: a log that does not exist is :class:`NotFoundError`.
    """

    def __init__(self, path: Path | str, *, log_id: str | None = None, read_only: bool = False) -> None:
        self.path = Path(path)
        self.meta_path = Path(f"{self.path}.meta.json")
        self.lock_path = Path(f"{self.path}.lock")
        self.read_only = read_only
        self._failure: str | None = None
        self._index = EventIdIndex()
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Under the lock: two processes opening a new log at once must agree on one log_id.
        with self._locked():
            self.log_id = load_or_create_meta(self.path, self.meta_path, log_id, FORMAT, create=not read_only)
        self.genesis = genesis_hash(self.log_id)

    def __repr__(self) -> str:
        return f"NdjsonEventLog({str(self.path)!r}, log_id={self.log_id!r})"

    def projection_shelf(self) -> DirectoryShelf:
        """``<log>.projections/`` beside the log; not writable when the log was opened read-only."""
        from leviathan_dagster.core.projections.snapshot_shelves import DirectoryShelf

        return DirectoryShelf(Path(f"{self.path}.projections"), writable=not self.read_only)

    # -- writing ---------------------------------------------------------------------------------

    def append(self, events: Sequence[Event]) -> list[StoredEvent]:
        """Append the events not yet in the log as one atomic, durable write (see :class:`EventStore`).

        Raises :class:`InvalidEvent` or :class:`ConflictError` (nothing written), :class:`EventLogCorrupted`
        if the current last line is unreadable, and :class:`TransientError` if the disk write fails (this
        instance then refuses further appends).
        """
        events = list(events)
        bodies = canonical_bundle(events)  # validate all before touching the file
        if self.read_only:
            raise TransientError(f"event log {self.path} was opened read-only; it cannot be appended to")
        if self._failure is not None:
            raise TransientError(
                f"event log {self.path}: this writer stopped after a failed write ({self._failure}); "
                "open a new NdjsonEventLog to continue"
            )
        if not events:
            return []
        with self._locked(), self._opened_for_append() as fd:
            self._read_tail(fd)  # an unreadable last line stops us here, before any repair touches the file
            quarantined = repair_tail(fd, self.path, self.genesis)
            seq, prev, size = self._read_tail(fd)
            self._catch_up_index(fd, size)
            result: list[StoredEvent] = []
            new: list[StoredEvent] = []
            if quarantined is not None:  # the record of the repair goes first, before the caller's events
                seq += 1
                body = canonical_event_bytes(quarantined)
                new.append(StoredEvent(seq, quarantined, prev, chain_hash(prev, seq, body), body))
                prev = new[-1].hash
            try:
                for event, body in zip(events, bodies, strict=True):
                    offset = self._index.offsets.get(event.event_id)
                    if offset is not None:  # already accepted: answer with the original, or refuse
                        result.append(check_same_content(read_line_at(fd, offset), body))
                        continue
                    seq += 1
                    new.append(StoredEvent(seq, event, prev, chain_hash(prev, seq, body), body))
                    result.append(new[-1])
                    prev = new[-1].hash
            except ConflictError:
                # Nothing of the caller's is written, but the repair already happened: record it.
                self._write_lines(fd, new[:1] if quarantined is not None else [], size)
                raise
            self._write_lines(fd, new, size)
        return result

    def _catch_up_index(self, fd: int, size: int) -> None:
        """The event_id index up to ``size`` (under the lock). A new process starts it from its
        newest snapshot (``ndjson_id_snapshots``) instead of parsing every line of the history, and
        leaves a new snapshot every ``INDEX_SNAPSHOT_EVERY`` lines (written under the lock: one
        append in that many waits for it)."""
        from leviathan_dagster.core.events.ndjson import id_snapshots as ndjson_id_snapshots

        if self._index.empty and size >= INDEX_SNAPSHOT_MIN_BYTES:
            ndjson_id_snapshots.seed_index(self._index, fd, size, self.projection_shelf(), self.log_id)
        self._index.catch_up(fd, size)
        ndjson_id_snapshots.snapshot_index(
            self._index, fd, self.projection_shelf(), self.log_id, INDEX_SNAPSHOT_EVERY
        )

    def _write_lines(self, fd: int, new: list[StoredEvent], size: int) -> None:
        if new:
            lines = [encode_line(item.seq, item.prev_hash, item.hash, item.body) for item in new]
            self._write_durably(fd, b"".join(lines), size)
            for item, line in zip(new, lines, strict=True):
                self._index.add(item.event.event_id, line)

    def expect_new_ids_after(self, seq: int) -> None:
        """See :meth:`EventStore.expect_new_ids_after`: the event_id index starts at the line after
        ``seq`` (found by bisection), so a worker's first append does not read the history."""
        if seq <= 0:
            return
        with self._locked():
            try:
                fd = self._open_log(os.O_RDONLY)
            except FileNotFoundError:
                return
            try:
                offset = offset_after_seq(fd, os.fstat(fd).st_size, seq)
            finally:
                os.close(fd)
            if offset is not None:
                self._index.start_at(offset, seq)

    @contextmanager
    def _opened_for_append(self) -> Iterator[int]:
        # OSErrors before the write (open, reading the tail, trimming it) change nothing acknowledged, so
        # they are plain TransientErrors; the write and fsync get their own handling in _write_durably.
        try:
            fd = self._open_log(os.O_RDWR | os.O_APPEND)
        except OSError as exc:
            raise TransientError(f"event log {self.path}: cannot open for append ({exc})") from exc
        try:
            yield fd
        except OSError as exc:
            raise TransientError(f"event log {self.path}: {exc}") from exc
        finally:
            os.close(fd)

    def _write_durably(self, fd: int, data: bytes, size: int) -> None:
        # One write() of every line of the call, on an O_APPEND descriptor: the bundle lands contiguously
        # at the end, and readers (who only read up to a size noted under the lock) see all of it or none.
        # fsync before the lock is released and before returning: an event is acknowledged only once it
        # is on disk, so a crash can lose only appends that never returned (at most a torn last line,
        # which the next append repairs, see ndjson_tail). A crash may also leave the first
        # complete lines of an unacknowledged bundle; they verify, and a retry of the bundle finds them
        # by event_id and appends only the rest, so the producer still ends up with its whole bundle once.
        #
        # On any OSError this instance is poisoned instead of carrying on. After a failed fsync Linux may
        # have dropped the dirty pages and cleared the error, so a retried fsync can "succeed" with the
        # data never written (PostgreSQL's 2018 fsync bug): nothing this process believes about the file
        # can be trusted. We still try to cut the file back to its old size, while we hold the lock, so
        # that no other writer chains onto events whose append raised.
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.EIO, f"short write: {written} of {len(data)} bytes")
            os.fsync(fd)
        except OSError as exc:
            self._failure = f"{type(exc).__name__}: {exc}"
            try:
                os.ftruncate(fd, size)
            except OSError:
                logger.warning("event log %s: could not remove the lines of a failed append", self.path)
            raise TransientError(f"event log {self.path}: append not written ({exc})") from exc

    # -- reading ---------------------------------------------------------------------------------

    def read(self, after_seq: int = 0) -> Iterator[StoredEvent]:
        """Events with ``seq > after_seq`` in order, streamed line by line (hashes are not re-checked;
        use :meth:`verify`). Raises :class:`EventLogCorrupted` on a malformed or out-of-place line."""
        end = self._acknowledged_size()
        return self._read_until(end, after_seq)

    def _read_until(self, end: int, after_seq: int) -> Iterator[StoredEvent]:
        start = self._offset_after(end, after_seq)
        if start is not None:
            yield from self._read_from(start, end, after_seq)
            return
        for seq, raw in enumerate(self._lines(end), start=1):
            if not raw.endswith(b"\n"):
                # A torn tail. Readers leave it alone and say so; a complete event that lost only its
                # newline is read as the event it is, since the appender will keep it (see ndjson_tail).
                tail = self._inspect_tail(end)
                if tail is not None:
                    logger.warning("event log %s: %s", self.path, tail.describe())
                    if tail.complete is not None and tail.complete.seq == seq and seq > after_seq:
                        yield tail.complete
                return
            if seq <= after_seq:
                continue  # skipping by position, not by parsing: paging deep into a big log stays cheap
            try:
                stored = parse_line(raw)
            except BadLine as exc:
                raise EventLogCorrupted(seq, f"line {seq} unparseable: {exc}") from None
            if stored.seq != seq:
                raise EventLogCorrupted(seq, f"line {seq} holds seq {stored.seq}; run verify()")
            yield stored

    def _offset_after(self, end: int, after_seq: int) -> int | None:
        """Where the line after ``after_seq`` starts (found by bisection, see ``ndjson_seek``); None:
        read from byte 0 (nothing to skip, or a probe found a line it could not read)."""
        if after_seq <= 0 or end == 0:
            return None
        try:
            fd = self._open_log(os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            return offset_after_seq(fd, end, after_seq)
        finally:
            os.close(fd)

    def _read_from(self, start: int, end: int, after_seq: int) -> Iterator[StoredEvent]:
        """The lines of ``[start, end)``, which must hold seqs ``after_seq + 1, after_seq + 2, ...``."""
        expected = after_seq
        with self.path.open("rb") as handle:
            handle.seek(start)
            consumed = start
            for raw in handle:
                consumed += len(raw)
                if consumed > end:
                    return  # appended after this read began: not ours to show
                if not raw.endswith(b"\n"):
                    # A torn tail, as in _read_until: reported, and a complete event that lost only its
                    # newline is read as the event it is (the appender keeps it).
                    tail = self._inspect_tail(end)
                    if tail is not None:
                        logger.warning("event log %s: %s", self.path, tail.describe())
                        if tail.complete is not None and tail.complete.seq == expected + 1:
                            yield tail.complete
                    return
                expected += 1
                try:
                    stored = parse_line(raw)
                except BadLine as exc:
                    raise EventLogCorrupted(expected, f"line {expected} unparseable: {exc}") from None
                if stored.seq != expected:
                    raise EventLogCorrupted(expected, f"line {expected} holds seq {stored.seq}; run verify()")
                yield stored

    def events_of_type(self, types: set[str] | frozenset[str]) -> Iterator[StoredEvent]:
        """The events whose ``event_type`` is in ``types``, in order."""
        return (stored for stored in self.read() if stored.event_type in types)

    def get(self, event_id: str) -> StoredEvent | None:
        """The stored event with this ``event_id``, or None (one indexed lookup after catching up)."""
        with self._locked():
            try:
                fd = self._open_log(os.O_RDONLY)
            except FileNotFoundError:
                return None
            try:
                size = os.fstat(fd).st_size
                self._catch_up_index(fd, size)
                offset = self._index.offsets.get(event_id)
                if offset is not None:
                    return read_line_at(fd, offset)
                # A complete event that lost only its newline is an event for every reader (see read).
                tail = inspect_tail(fd, size, self.genesis)
                found = tail.complete if tail is not None else None
                return found if found is not None and found.event.event_id == event_id else None
            finally:
                os.close(fd)

    def head(self) -> tuple[int, str]:
        """(last seq, last hash), or (0, genesis hash) for an empty log; read from the last line only
        (a complete event missing only its newline counts, as it does for ``read``)."""
        with self._locked():
            try:
                fd = self._open_log(os.O_RDONLY)
            except FileNotFoundError:
                return 0, self.genesis
            try:
                tail = inspect_tail(fd, os.fstat(fd).st_size, self.genesis)
                if tail is not None and tail.complete is not None:
                    return tail.complete.seq, tail.complete.hash
                seq, last_hash, _ = self._read_tail(fd)
            finally:
                os.close(fd)
        return seq, last_hash

    def torn_tail(self) -> TornTail | None:
        """The bytes after the last newline, if any (see ``ndjson_tail``); reading changes nothing."""
        return self._inspect_tail(self._acknowledged_size())

    def _inspect_tail(self, end: int) -> TornTail | None:
        try:
            fd = self._open_log(os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            return inspect_tail(fd, min(end, os.fstat(fd).st_size), self.genesis)
        finally:
            os.close(fd)

    def verify(self, *, full: bool = True) -> VerifyReport:
        """Stream the log, recompute every hash, and report the first bad seq and the kind of damage.

        Every byte of a line is covered: the frame is fixed, the hashes are compared as text and the
        event bytes are hashed as stored, so a change to any byte fails at that line's seq in both
        modes. A whole-line deletion at the very end cannot be seen from the file alone; compare the
        head against one recorded elsewhere (a checkpoint) for that.
        """
        walk = ChainWalk(self.genesis, full=full)
        end = self._acknowledged_size()
        lines = self._lines(end)
        for raw in lines:
            if not raw.endswith(b"\n"):
                return self._torn_report(walk, end)
            try:
                try:
                    seq, prev_hash, hash_, body = split_line(raw)
                except BadLine as exc:
                    raise Damage("malformed", f"line {walk.count + 1} unparseable: {exc}") from None
                # latin-1 never fails: a non-hex byte simply makes the comparison fail at this seq.
                walk.check(seq, prev_hash.decode("latin-1"), hash_.decode("latin-1"), body)
            except Damage as damage:
                return walk.report(_refine(damage, walk.count + 1, lines))
        return walk.report()

    def _torn_report(self, walk: ChainWalk, end: int) -> VerifyReport:
        # Never ok: even a complete event missing its newline is reported, so that an operator hears of
        # damage the appender would otherwise repair silently; it still counts as verified.
        tail = self._inspect_tail(end) or TornTail(end, end)
        return VerifyReport(
            ok=False,
            events=walk.count + (tail.complete is not None),
            head_hash=tail.complete.hash if tail.complete is not None else walk.head,
            first_bad_seq=walk.count + 1,
            reason=tail.describe(),
            kind="torn",
            byte_range=(tail.start, tail.end),
        )

    def verify_or_raise(self, *, full: bool = True) -> VerifyReport:
        """:meth:`verify`, raising :class:`EventLogCorrupted` at the first bad seq."""
        report = self.verify(full=full)
        if not report.ok:
            raise EventLogCorrupted(report.first_bad_seq or 0, report.reason or "unknown")
        return report

    # -- files and the lock ----------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # The chain head is read from the file and the next line is written after it; that pair must be
        # one critical section across processes. Without the lock, two writers would both read head
        # (seq n, hash h), both write a line with seq n+1 and prev_hash h, and both return success: a
        # fork, with two acknowledged events claiming the same place and one of them failing verify.
        # The same section makes the event_id check and the write one step, so two processes retrying
        # the same bundle cannot both find it missing and both append it.
        #
        # A blocking flock on a separate, never-deleted lock file: the kernel wakes the next waiter as
        # soon as the holder closes (filelock's retry loop sleeps 50 ms between tries), the lock dies
        # with its process, and each acquisition opens its own descriptor, so threads of one process
        # exclude each other too. The lock file is never unlinked: a process blocked on an unlinked
        # inode would "win" a lock nobody else contends for.
        #
        # A read-only instance opens the lock file without creating it (flock works on a read-only
        # descriptor); when there is none, no writer has ever opened the log, so there is nothing to
        # wait for.
        flags = os.O_RDONLY if self.read_only else os.O_RDWR | os.O_CREAT
        try:
            fd = os.open(self.lock_path, flags | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            if not self.read_only:
                raise TransientError(f"event log lock {self.lock_path}: directory missing") from None
            yield
            return
        except OSError as exc:
            raise TransientError(f"event log lock {self.lock_path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _open_log(self, flags: int) -> int:
        try:
            return os.open(self.path, flags | os.O_CLOEXEC)
        except FileNotFoundError:
            if flags & os.O_ACCMODE == os.O_RDONLY:
                raise
        fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        fsync_dir(self.path.parent)  # the new name must survive a crash as much as the data does
        return fd

    def _acknowledged_size(self) -> int:
        # Under the lock no append is half-way through its write, so every byte below this size was
        # fsynced by an append that returned (or is a torn tail left by a crash).
        with self._locked():
            try:
                return self.path.stat().st_size
            except FileNotFoundError:
                return 0

    def _lines(self, end: int) -> Iterator[bytes]:
        """Raw lines of the first ``end`` bytes; the last one lacks its newline if it is torn."""
        if end == 0:
            return
        with self.path.open("rb") as handle:
            consumed = 0
            for raw in handle:  # binary mode splits on b"\n" only, never on \r or U+2028
                consumed += len(raw)
                if consumed >= end:
                    yield raw[: len(raw) - (consumed - end)]
                    return
                yield raw

    def _read_tail(self, fd: int) -> tuple[int, str, int]:
        """(seq, hash) of the last newline-terminated line and the file size, reading backwards."""
        size = os.fstat(fd).st_size
        end = size if not size or os.pread(fd, 1, size - 1) == b"\n" else after_last_newline(fd, size)
        if end == 0:
            return 0, self.genesis, size
        start = after_last_newline(fd, end - 1)
        try:
            seq, _, hash_, _ = split_line(os.pread(fd, end - start, start))
            if not _HEX64.fullmatch(hash_):
                raise BadLine("hash is not 64 lowercase hex digits")
        except BadLine as exc:
            seq = count_newlines(fd, end)  # the error path only: the file is read once more to name the seq
            raise EventLogCorrupted(seq, f"last line unparseable ({exc}); run verify()") from None
        return seq, hash_.decode("ascii"), size


def _refine(damage: Damage, expected: int, rest: Iterator[bytes]) -> Damage:
    """A seq gap is a deletion unless the missing seq turns up later: then lines were reordered.
    Only run on the failure path, so reading the rest of the file costs nothing in the good case."""
    if damage.kind != "deleted":
        return damage
    for raw in rest:
        try:
            seq = split_line(raw)[0]
        except BadLine:
            continue
        if seq == expected:
            return Damage(
                "reordered",
                f"line {expected} is out of place and seq {expected} comes later: lines reordered",
            )
    return damage
