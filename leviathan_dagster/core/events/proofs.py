"""Checkpoints and proofs over an event store: sign tree heads, check a log against them, prove events.

Files under the Leviathan home::

    <home>/keys/checkpoint.key              signer key (PRIVATE+KEY+...), mode 0600, made on first use
    <home>/keys/checkpoint.pub              its verifier key, to hand to whoever checks our checkpoints
    <home>/keys/checkpoint.state            the largest tree head this key ever signed (origin, size, root)
    <home>/checkpoints/<size:012d>.note     every checkpoint signed, by tree size
    <home>/checkpoints/latest.note          the newest one

A new checkpoint must be consistent with *every* tree head the key has signed that can still be found:
the state file (kept beside the key, so deleting ``latest.note`` or the whole checkpoints folder does
not reset what the signer remembers), every numbered note and ``latest.note``. Two signed checkpoints
of one log can then never contradict each other, unless the key's own directory is rewritten.

Leaf ``i`` of the tree is the canonical bytes of the event at seq ``i + 1``, in seq order.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from leviathan_dagster.core.errors import EventLogCorrupted, NotFoundError
from leviathan_dagster.core.events.chain import canonical_event_bytes
from leviathan_dagster.core.events.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoteSigner,
    NoteVerifier,
    checkpoint_origin,
    open_checkpoint,
    sign_checkpoint,
)
from leviathan_dagster.core.events.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from leviathan_dagster.core.events.model import StoredEvent
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.home import LeviathanHome

SIGNER_FILE = "checkpoint.key"
VERIFIER_FILE = "checkpoint.pub"
STATE_FILE = "checkpoint.state"
LATEST_FILE = "latest.note"


def checkpoints_dir(home: LeviathanHome) -> Path:
    return home.root / "checkpoints"


def keys_dir(home: LeviathanHome) -> Path:
    return home.root / "keys"


def leaf_bytes(stored: StoredEvent) -> bytes:
    """The leaf data of an event: its stored canonical bytes when the backend keeps them."""
    return getattr(stored, "body", None) or canonical_event_bytes(stored.event)


def build_tree(store: EventStore) -> MerkleTree:
    """The Merkle tree over every event of ``store``, leaves in seq order."""
    return MerkleTree(leaf_hash(leaf_bytes(stored)) for stored in store.read())


def log_origin(store: EventStore) -> str:
    log_id = getattr(store, "log_id", None)
    if not log_id:
        raise CheckpointError(f"{store!r} has no log_id, so its checkpoints could not name it")
    return checkpoint_origin(log_id)


def load_verifier(home: LeviathanHome) -> NoteVerifier:
    """The verifier key of this home's checkpoints (``keys/checkpoint.pub``)."""
    path = keys_dir(home) / VERIFIER_FILE
    if not path.exists():
        raise NotFoundError(f"no checkpoint key at {path}: run `leviathan events checkpoint` first")
    return NoteVerifier.from_key(path.read_text())


def load_latest(home: LeviathanHome, verifier: NoteVerifier) -> tuple[Checkpoint, str] | None:
    """The newest checkpoint and its note, or None; it must verify under ``verifier``."""
    path = checkpoints_dir(home) / LATEST_FILE
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8")
    try:
        return open_checkpoint(text, verifier), text
    except CheckpointError as exc:
        raise CheckpointError(f"{path} does not verify with {verifier.to_key()}: {exc}") from None


def create_checkpoint(store: EventStore, home: LeviathanHome) -> tuple[Checkpoint, str]:
    """Sign a checkpoint of the whole log and store it; returns it with its note text.

    Refuses (:class:`CheckpointError`, nothing written) an empty log, a chain that does not verify, and
    a log inconsistent with any tree head this key has signed (see the module docstring): another
    log's, a longer one (truncated since), or one whose first events no longer hash to its root
    (rewritten). A log that was rewritten must never get a fresh signature that would launder it.
    """
    origin = log_origin(store)
    folder = checkpoints_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    # One checkpointer at a time: two could each pass the consistency check against the same
    # previous heads and then race to replace them, or both create a first key and each sign with its own.
    with FileLock(str(folder / ".lock")):
        signer = _load_or_create_signer(home, origin)
        tree = build_tree(store)
        if tree.size == 0:
            raise CheckpointError("the log is empty: there is nothing to checkpoint yet")
        # After reading the tree, so the verified chain covers at least the events hashed into it.
        # Hash-only is enough: the leaves are those same stored bytes, and it finds any changed byte.
        report = store.verify(full=False)
        if not report.ok:
            raise CheckpointError(
                f"chain broken at seq {report.first_bad_seq} ({report.reason}); not signing"
            )
        signed = signed_heads(home, signer.verifier())
        for where, previous in signed:
            _check_extends(previous, origin, tree, where)
        cp = Checkpoint(origin, tree.size, tree.root())
        note = sign_checkpoint(cp, signer)
        # The state first: if we crash after it, the signer remembers a head it may not have published,
        # which only ever makes it stricter.
        if all(cp.size >= previous.size for _, previous in signed):
            state = {"origin": cp.origin, "size": cp.size, "root": cp.root.hex()}
            _write_atomically(keys_dir(home) / STATE_FILE, json.dumps(state).encode() + b"\n")
        _write_atomically(folder / f"{cp.size:012d}.note", note.encode("utf-8"))
        _write_atomically(folder / LATEST_FILE, note.encode("utf-8"))
    return cp, note


def signed_heads(home: LeviathanHome, verifier: NoteVerifier) -> list[tuple[str, Checkpoint]]:
    """Every tree head this key is known to have signed: the state file, every numbered note and
    ``latest.note``, each with where it was found. A note that does not verify under ``verifier`` is
    refused (:class:`CheckpointError`): it is either forged or by another key, and the signer cannot
    tell which heads it has promised without reading them all."""
    heads: list[tuple[str, Checkpoint]] = []
    state_path = keys_dir(home) / STATE_FILE
    if state_path.exists():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
            heads.append(
                (str(state_path), Checkpoint(state["origin"], state["size"], bytes.fromhex(state["root"])))
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{state_path} is unreadable ({exc}); restore it before signing") from None
    for path in sorted(checkpoints_dir(home).glob("*.note")):
        try:
            heads.append((str(path), open_checkpoint(path.read_text(encoding="utf-8"), verifier)))
        except (CheckpointError, OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path} does not verify with {verifier.to_key()}: {exc}") from None
    return heads


def _check_extends(previous: Checkpoint, origin: str, tree: MerkleTree, where: str) -> None:
    if previous.origin != origin:
        raise CheckpointError(f"{where} is for {previous.origin!r}, not {origin!r}; not signing")
    if tree.size < previous.size:
        raise CheckpointError(
            f"log has {tree.size} events, {where} signed {previous.size}: truncated; not signing"
        )
    if previous.size == 0:  # nothing to contradict (only older versions signed empty logs)
        return
    proof = tree.consistency_proof(previous.size)
    if not verify_consistency(previous.size, tree.size, previous.root, tree.root(), proof):
        raise CheckpointError(
            f"the first {previous.size} events no longer match the root signed in {where}: "
            "the log was rewritten; not signing"
        )


@dataclass(frozen=True)
class CheckpointReport:
    """What checking a log against one checkpoint found. ``finding`` is one of ``consistent``,
    ``bad-checkpoint`` (malformed or not signed by the key), ``other-log``, ``unreadable``,
    ``truncated`` or ``rewritten``."""

    ok: bool
    finding: str
    detail: str
    checkpoint_size: int | None = None
    log_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_against_checkpoint(store: EventStore, note_text: str, verifier: NoteVerifier) -> CheckpointReport:
    """Check that ``store`` still holds, unchanged, the log that ``note_text`` signed.

    Catches what the hash chain alone cannot: a truncated tail (the chain of a prefix verifies) and a
    rewrite followed by a full re-hash of the chain (it verifies too, but the Merkle root differs).
    """
    try:
        cp = open_checkpoint(note_text, verifier)
    except CheckpointError as exc:
        return CheckpointReport(False, "bad-checkpoint", str(exc))
    origin = log_origin(store)
    if cp.origin != origin:
        return CheckpointReport(
            False, "other-log", f"checkpoint is for {cp.origin!r}, this log is {origin!r}"
        )
    try:
        tree = build_tree(store)
    except EventLogCorrupted as exc:
        return CheckpointReport(False, "unreadable", str(exc), cp.size)
    if tree.size < cp.size:
        detail = (
            f"log has {tree.size} events, checkpoint has {cp.size}: seq {tree.size + 1}..{cp.size} are gone"
        )
        return CheckpointReport(False, "truncated", detail, cp.size, tree.size)
    if tree.root(cp.size) != cp.root:
        detail = (
            f"the first {cp.size} events do not hash to the checkpoint's root: at least one of seq "
            f"1..{cp.size} was changed, removed, inserted or reordered (even if the chain was re-hashed)"
        )
        return CheckpointReport(False, "rewritten", detail, cp.size, tree.size)
    detail = f"log of {tree.size} events extends checkpoint of {cp.size}"
    return CheckpointReport(True, "consistent", detail, cp.size, tree.size)


def prove_event(store: EventStore, event_id: str, home: LeviathanHome | None = None) -> dict[str, Any]:
    """Proof that event ``event_id`` is in the log, as plain JSON-ready data.

    Holds the event's canonical bytes, an inclusion proof in the current tree, and, when ``home`` has a
    checkpoint, the signed note with a consistency proof from it to the current tree (plus an
    inclusion proof in the checkpoint's own tree when the event is older than the checkpoint).
    """
    hashes: list[bytes] = []
    found: tuple[int, StoredEvent, bytes] | None = None
    for stored in store.read():
        data = leaf_bytes(stored)
        if stored.event.event_id == event_id:
            found = (len(hashes), stored, data)
        hashes.append(leaf_hash(data))
    if found is None:
        raise NotFoundError(f"no event {event_id!r} in the log")
    index, stored, data = found
    tree = MerkleTree(hashes)
    proof: dict[str, Any] = {
        "event_id": event_id,
        "seq": stored.seq,
        "leaf_index": index,
        "leaf": data.decode("utf-8"),
        "leaf_hash": hashes[index].hex(),
        "tree_size": tree.size,
        "root": tree.root().hex(),
        "inclusion_proof": [h.hex() for h in tree.inclusion_proof(index)],
        "checkpoint": None,
    }
    has_key = home is not None and (keys_dir(home) / VERIFIER_FILE).exists()
    latest = load_latest(home, load_verifier(home)) if has_key else None
    if latest is not None and latest[0].size > 0:
        cp, note = latest
        if cp.size > tree.size or tree.root(cp.size) != cp.root:
            raise CheckpointError(f"the log is not consistent with its latest checkpoint (size {cp.size})")
        proof["checkpoint"] = {
            "note": note,
            "size": cp.size,
            "root": cp.root.hex(),
            "consistency_proof": [h.hex() for h in tree.consistency_proof(cp.size)],
            "inclusion_proof": (
                [h.hex() for h in tree.inclusion_proof(index, cp.size)] if index < cp.size else None
            ),
        }
    return proof


def verify_event_proof(proof: dict[str, Any], verifier: NoteVerifier | None = None) -> None:
    """Re-check a :func:`prove_event` result; raises :class:`CheckpointError` naming what fails.

    With ``verifier``, the checkpoint's note must carry its signature and match the proof's size and
    root; without one, only the hashes are checked (the root is then unauthenticated).
    """
    leaf = leaf_hash(proof["leaf"].encode("utf-8"))
    if json.loads(proof["leaf"]).get("event_id") != proof["event_id"] or leaf.hex() != proof["leaf_hash"]:
        raise CheckpointError("the leaf is not the event named by the proof")
    index, size, root = proof["leaf_index"], proof["tree_size"], bytes.fromhex(proof["root"])
    path = [bytes.fromhex(h) for h in proof["inclusion_proof"]]
    if not verify_inclusion(index, size, leaf, path, root):
        raise CheckpointError(f"inclusion proof of leaf {index} in the tree of {size} does not verify")
    cp_proof = proof.get("checkpoint")
    if not cp_proof:
        return
    m, cp_root = cp_proof["size"], bytes.fromhex(cp_proof["root"])
    if verifier is not None:
        signed = open_checkpoint(cp_proof["note"], verifier)
        if (signed.size, signed.root) != (m, cp_root):
            raise CheckpointError("the checkpoint's size or root differs from its signed note")
    consistency = [bytes.fromhex(h) for h in cp_proof["consistency_proof"]]
    if not verify_consistency(m, size, cp_root, root, consistency):
        raise CheckpointError(f"consistency proof from checkpoint {m} to tree {size} does not verify")
    if cp_proof.get("inclusion_proof") is not None:
        path = [bytes.fromhex(h) for h in cp_proof["inclusion_proof"]]
        if not verify_inclusion(index, m, leaf, path, cp_root):
            raise CheckpointError(f"inclusion proof of leaf {index} in checkpoint {m} does not verify")


def _load_or_create_signer(home: LeviathanHome, name: str) -> NoteSigner:
    folder = keys_dir(home)
    path = folder / SIGNER_FILE
    if path.exists():
        return NoteSigner.from_key(path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    signer = NoteSigner.generate(name)
    # O_EXCL with mode 0600 at creation: the seed is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(signer.to_key() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    _write_atomically(folder / VERIFIER_FILE, (signer.verifier().to_key() + "\n").encode())
    return signer


def _write_atomically(path: Path, data: bytes) -> None:
    # Write, fsync, rename: a crash leaves the old file or the new one, never half a note.
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
