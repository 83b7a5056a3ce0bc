"""Moving a whole event log between backends: ``events export`` and ``events import``.

An export (format ``leviathan-export/v1``) is NDJSON. Its first line is a header::

    {"format":"leviathan-export/v1","log_id":"…","events":N,"head_hash":"<64 hex>","merkle_root":"<64 hex>"}

and each further line is one event, byte for byte the line of the NDJSON log (see ``ndjson_lines``):
``{"seq":N,"prev_hash":"…","hash":"…","event":<canonical bytes>}``. Exporting an NDJSON log therefore
copies its lines verbatim, and an export of the same events is the same bytes whatever the backend.

Import never trusts the file: it first reads all of it into a private copy while re-checking every link
from the genesis of the header's log_id (and the canonical form of every event, and that no event_id
appears twice), the count, the head hash and the Merkle root, and the signed checkpoint if one is given.
Only then does it append, in bundles, into an empty target opened under the same log_id, and it ends by
checking that the target's head is the export's head. Anything wrong with the export raises
:class:`ImportRefused` naming the seq and the reason, before the target is touched.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import IO, Any, BinaryIO

from leviathan_dagster.core.errors import ConfigError, EventLogCorrupted, LeviathanError
from leviathan_dagster.core.events.chain import genesis_hash
from leviathan_dagster.core.events.chain_check import ChainWalk, Damage
from leviathan_dagster.core.events.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoteVerifier,
    checkpoint_origin,
    open_checkpoint,
)
from leviathan_dagster.core.events.merkle import MerkleTree, leaf_hash
from leviathan_dagster.core.events.model import StoredEvent
from leviathan_dagster.core.events.ndjson.lines import BadLine, encode_line, parse_line, split_line
from leviathan_dagster.core.events.store import EventStore

FORMAT = "leviathan-export/v1"
DEFAULT_BUNDLE_SIZE = 1000
# Progress is reported every this many events, so small logs stay quiet.
PROGRESS_STEP = 10_000
# Exported lines are gathered in memory up to this size (then in a temporary file) until the header,
# which needs the count, head and root, has been written.
_SPOOL_BYTES = 64 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEADER_KEYS = ("format", "log_id", "events", "head_hash", "merkle_root")

# progress(phase, events done, events in total or None while unknown); phase is export|verify|append.
Progress = Callable[[str, int, int | None], None]


class ImportRefused(LeviathanError):
    """An export that does not verify; nothing was written. ``seq`` is the first bad event (None when
    the problem is the header or the checkpoint as a whole)."""

    def __init__(self, seq: int | None, reason: str) -> None:
        self.seq = seq
        self.reason = reason
        where = f"at seq {seq}" if seq is not None else "(export as a whole)"
        super().__init__(f"import refused {where}: {reason}; nothing was written")


@dataclass(frozen=True)
class ExportHeader:
    """The first line of an export: which log, how many events, and the head and root they must give."""

    log_id: str
    events: int
    head_hash: str
    merkle_root: str

    def encode(self) -> bytes:
        """The header line, in its one serialization (fixed key order, no spaces): exports reproduce."""
        record = {
            "format": FORMAT,
            "log_id": self.log_id,
            "events": self.events,
            "head_hash": self.head_hash,
            "merkle_root": self.merkle_root,
        }
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"

    @classmethod
    def parse(cls, raw: bytes) -> ExportHeader:
        """The header in ``raw`` (the first line, newline included); else :class:`ImportRefused`."""
        if not raw:
            raise ImportRefused(None, "the export is empty (no header line)")
        if not raw.endswith(b"\n"):
            raise ImportRefused(None, "the header line is torn (no newline): the export is truncated")
        try:
            record = json.loads(raw, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ImportRefused(None, f"the header line is not JSON ({exc})") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            found = record.get("format") if isinstance(record, dict) else None
            raise ImportRefused(None, f"not a Leviathan export: format is {found!r}, expected {FORMAT!r}")
        if sorted(record) != sorted(_HEADER_KEYS):
            raise ImportRefused(None, f"the header must have exactly the keys {list(_HEADER_KEYS)}")
        log_id, events = record["log_id"], record["events"]
        if not isinstance(log_id, str) or not log_id:
            raise ImportRefused(None, f"header log_id {log_id!r} is not a non-empty string")
        if not isinstance(events, int) or isinstance(events, bool) or events < 0:
            raise ImportRefused(None, f"header events {events!r} is not a count")
        for key in ("head_hash", "merkle_root"):
            if not isinstance(record[key], str) or not _HEX64.fullmatch(record[key]):
                raise ImportRefused(None, f"header {key} is not 64 lowercase hex digits")
        header = cls(log_id, events, record["head_hash"], record["merkle_root"])
        if header.encode() != raw:
            raise ImportRefused(None, "the header line is not in the form this version writes (edited?)")
        return header


@dataclass(frozen=True)
class ExportReport:
    log_id: str
    events: int
    head_hash: str
    merkle_root: str
    bytes_written: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ImportReport:
    log_id: str
    events: int
    head_hash: str
    merkle_root: str
    bundles: int
    target: str
    # The size of the signed checkpoint the export was checked against, when one was given.
    checkpoint_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- export ------------------------------------------------------------------------------------------


def export_events(store: EventStore, out: BinaryIO, *, progress: Progress | None = None) -> ExportReport:
    """Write every event of ``store`` to ``out`` as a ``leviathan-export/v1`` file.

    One pass over the store (one consistent view of it): each event is checked against the chain as it
    is read, in full (a log that would not import is refused here, :class:`EventLogCorrupted` naming the
    seq), its line is spooled, and the header with the count, head and Merkle root is written first once
    they are known. ``out`` may be a pipe; nothing is written to it if the log does not verify.
    """
    log_id = _log_id_of(store)
    walk = ChainWalk(genesis_hash(log_id), full=True)
    leaves: list[bytes] = []
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        for stored in store.read():
            try:
                walk.check(stored.seq, stored.prev_hash, stored.hash, stored.body)
            except Damage as damage:
                raise EventLogCorrupted(walk.count + 1, f"{damage.reason}; not exporting") from None
            spool.write(encode_line(stored.seq, stored.prev_hash, stored.hash, stored.body))
            leaves.append(leaf_hash(stored.body))
            _tick(progress, "export", walk.count, None)
        header = ExportHeader(log_id, walk.count, walk.head, MerkleTree(leaves).root().hex())
        head_line = header.encode()
        size = spool.tell()
        spool.seek(0)
        out.write(head_line)
        shutil.copyfileobj(spool, out, 1 << 20)
    out.flush()
    return ExportReport(log_id, header.events, header.head_hash, header.merkle_root, len(head_line) + size)


# -- import ------------------------------------------------------------------------------------------


def import_events(
    source: BinaryIO,
    target_store: EventStore,
    *,
    checkpoint_note: str | None = None,
    verifier: NoteVerifier | None = None,
    bundle_size: int = DEFAULT_BUNDLE_SIZE,
    progress: Progress | None = None,
) -> ImportReport:
    """Verify the whole export in ``source`` (and ``checkpoint_note`` with ``verifier``), then append it
    into ``target_store``, which must be empty and opened with the export's log_id.

    Raises :class:`ImportRefused` (seq and reason) for a bad export or checkpoint and :class:`ConfigError`
    for a target that is not empty or belongs to another log; in both cases nothing is written.
    """
    _check_target_empty(target_store)  # cheap, and spares reading a large file for nothing
    with verify_export(
        source, checkpoint_note=checkpoint_note, verifier=verifier, progress=progress
    ) as export:
        return export.commit(target_store, bundle_size=bundle_size, progress=progress)


class VerifiedExport:
    """An export that verified, held in a private copy (so what is appended is what was checked, even
    if the source file changes meanwhile). Made by :func:`verify_export`, valid inside its ``with``."""

    def __init__(self, header: ExportHeader, copy: IO[bytes], checkpoint: Checkpoint | None) -> None:
        self.header = header
        self.checkpoint = checkpoint
        self._copy = copy

    def commit(
        self,
        target: EventStore,
        *,
        bundle_size: int = DEFAULT_BUNDLE_SIZE,
        progress: Progress | None = None,
    ) -> ImportReport:
        """Append every event into ``target`` in bundles of ``bundle_size`` (one append each: one fsync
        or one transaction), then check that the target's head is the export's."""
        if bundle_size < 1:
            raise ConfigError(f"bundle size must be at least 1, got {bundle_size}")
        header = self.header
        target_id = _log_id_of(target)
        if target_id != header.log_id:
            raise ConfigError(
                f"the target {target!r} has log_id {target_id!r} but the export is of log {header.log_id!r}; "
                "import into a new, empty log opened with the export's log_id"
            )
        _check_target_empty(target)
        self._copy.seek(0)
        bundles = 0
        bundle: list[StoredEvent] = []
        for raw in self._copy:
            bundle.append(parse_line(raw))
            if len(bundle) == bundle_size:
                _append_bundle(target, bundle)
                bundles += 1
                _tick(progress, "append", bundle[-1].seq, header.events, step=bundle_size)
                bundle = []
        if bundle:
            _append_bundle(target, bundle)
            bundles += 1
            _tick(progress, "append", bundle[-1].seq, header.events, step=len(bundle))
        head = target.head()
        if head != (header.events, header.head_hash):
            raise LeviathanError(
                f"after the import the target's head is seq {head[0]} {head[1]}, not the export's seq "
                f"{header.events} {header.head_hash}: another writer appended to the target meanwhile"
            )
        return ImportReport(
            log_id=header.log_id,
            events=header.events,
            head_hash=header.head_hash,
            merkle_root=header.merkle_root,
            bundles=bundles,
            target=repr(target),
            checkpoint_size=None if self.checkpoint is None else self.checkpoint.size,
        )


@contextmanager
def verify_export(
    source: BinaryIO,
    *,
    checkpoint_note: str | None = None,
    verifier: NoteVerifier | None = None,
    progress: Progress | None = None,
) -> Iterator[VerifiedExport]:
    """Read and verify the whole export in ``source``; yields it, verified, ready to :meth:`commit`.

    Checks, in order: the header; every line's frame, seq, prev_hash, hash and canonical event bytes
    from the genesis of the header's log_id; that no event_id appears twice; the count, head hash and
    Merkle root against the header; and, with ``checkpoint_note``, its signature under ``verifier``, its
    origin, and that its root is the root of the first ``size`` events. :class:`ImportRefused` otherwise.
    """
    if checkpoint_note is not None and verifier is None:
        raise ConfigError("checking a checkpoint needs the verifier key of whoever signed it")
    # The private copy lives as long as the verified export: what is appended is what was checked.
    with tempfile.TemporaryFile() as copy:
        header = ExportHeader.parse(source.readline())
        leaves = _verify_lines(source, header, copy, progress)
        tree = MerkleTree(leaves)
        if tree.root().hex() != header.merkle_root:
            raise ImportRefused(
                None,
                f"the Merkle root of the {tree.size} events is {tree.root().hex()}, not the header's "
                f"{header.merkle_root} (header edited)",
            )
        checkpoint = None
        if checkpoint_note is not None:
            assert verifier is not None
            checkpoint = _check_checkpoint(checkpoint_note, verifier, header, tree)
        copy.flush()
        yield VerifiedExport(header, copy, checkpoint)


def _verify_lines(
    source: BinaryIO, header: ExportHeader, copy: IO[bytes], progress: Progress | None
) -> list[bytes]:
    walk = ChainWalk(genesis_hash(header.log_id), full=True)
    seen: set[str] = set()
    leaves: list[bytes] = []
    for raw in source:
        seq = walk.count + 1
        if seq > header.events:
            raise ImportRefused(seq, f"the header promises {header.events} events but the export goes on")
        if not raw.endswith(b"\n"):
            raise ImportRefused(seq, f"the line of seq {seq} is torn (no newline): the export is truncated")
        try:
            line_seq, prev_hash, hash_, body = split_line(raw)
        except BadLine as exc:
            raise ImportRefused(seq, f"line {seq + 1} of the export is not an event line ({exc})") from None
        try:
            event = walk.check(line_seq, prev_hash.decode("latin-1"), hash_.decode("latin-1"), body)
        except Damage as damage:
            raise ImportRefused(seq, f"{damage.kind}: {damage.reason}") from None
        assert event is not None  # a full walk returns the parsed event
        if event.event_id in seen:
            raise ImportRefused(seq, f"event_id {event.event_id!r} appears a second time")
        seen.add(event.event_id)
        copy.write(raw)
        leaves.append(leaf_hash(body))
        _tick(progress, "verify", walk.count, header.events)
    if walk.count < header.events:
        raise ImportRefused(
            walk.count + 1,
            f"the export ends after seq {walk.count} but the header promises {header.events} events: "
            f"seq {walk.count + 1}..{header.events} are missing (truncated)",
        )
    if walk.head != header.head_hash:
        raise ImportRefused(
            walk.count or None,
            f"the chain ends in {walk.head}, not the header's head_hash {header.head_hash} (header edited)",
        )
    return leaves


def _check_checkpoint(
    note: str, verifier: NoteVerifier, header: ExportHeader, tree: MerkleTree
) -> Checkpoint:
    try:
        cp = open_checkpoint(note, verifier)
    except CheckpointError as exc:
        raise ImportRefused(None, f"the checkpoint does not verify: {exc}") from None
    origin = checkpoint_origin(header.log_id)
    if cp.origin != origin:
        raise ImportRefused(None, f"the checkpoint is for {cp.origin!r}, the export is of {origin!r}")
    if cp.size > tree.size:
        raise ImportRefused(
            tree.size + 1,
            f"the checkpoint covers {cp.size} events but the export has {tree.size}: "
            f"seq {tree.size + 1}..{cp.size} are missing (truncated)",
        )
    if tree.root(cp.size) != cp.root:
        raise ImportRefused(
            None,
            f"the first {cp.size} events do not hash to the checkpoint's root: at least one of seq "
            f"1..{cp.size} differs from the log that was signed (even though the chain verifies)",
        )
    return cp


def _append_bundle(target: EventStore, bundle: list[StoredEvent]) -> None:
    stored = target.append([item.event for item in bundle])
    for expected, got in zip(bundle, stored, strict=True):
        if (got.seq, got.hash) != (expected.seq, expected.hash):
            raise LeviathanError(
                f"the target stored seq {expected.seq} as seq {got.seq} with hash {got.hash}, not "
                f"{expected.hash}: another writer appended to the target during the import"
            )


# -- helpers -----------------------------------------------------------------------------------------


def _log_id_of(store: EventStore) -> str:
    log_id = getattr(store, "log_id", None)
    if not isinstance(log_id, str) or not log_id:
        raise ConfigError(f"{store!r} has no log_id; an export must name the log its chain belongs to")
    return log_id


def _check_target_empty(target: EventStore) -> None:
    seq, _ = target.head()
    if seq != 0:
        raise ConfigError(
            f"the target {target!r} already holds {seq} events; import only into an empty log "
            "(a new NDJSON path, or new PostgreSQL tables)"
        )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in object")
    return result


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _tick(progress: Progress | None, phase: str, done: int, total: int | None, step: int = 1) -> None:
    # With bundles, ``done`` moves ``step`` at a time: report whenever it crossed a multiple of PROGRESS_STEP.
    if progress is not None and done and done % PROGRESS_STEP < step:
        progress(phase, done, total)
