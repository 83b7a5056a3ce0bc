"""Signed checkpoints: the C2SP tlog-checkpoint body inside a C2SP signed note, signed with Ed25519.

A note is ``<body>\\n<signature lines>``; the body of a checkpoint is ``<origin>\\n<size>\\n<base64
root>\\n``. Each signature line is ``— <key name> <base64(key id ‖ signature)>``. Key strings use the Go
``golang.org/x/mod/sumdb/note`` formats, so Go tooling (and any C2SP verifier) can read our notes::

    verifier key  <name>+<hex key id>+<base64(0x01 ‖ public key)>
    signer key    PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 ‖ 32-byte seed)>

The key id (4 bytes, big-endian) is the start of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key); it lets a
verifier skip signatures by other keys of the same name without trying them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from leviathan_dagster.core.errors import LeviathanError

ALG_ED25519 = 0x01
SIG_PREFIX = "\u2014 "  # em dash and a space
ORIGIN_PREFIX = "leviathan/"
MAX_SIGNATURES = 100  # as in Go's note.Open: bounds the work a hostile note can cause
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")


class CheckpointError(LeviathanError):
    """A checkpoint that is malformed, not signed by the expected key, or inconsistent with the log."""


def checkpoint_origin(log_id: str) -> str:
    """The origin line of a Leviathan log's checkpoints: it names the log the tree belongs to."""
    return f"{ORIGIN_PREFIX}{log_id}"


def _key_id(name: str, public_key: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _check_name(name: str) -> str:
    if not name or "+" in name or any(c.isspace() for c in name):
        raise CheckpointError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


def _decode_key(name: str, key_id_hex: str, data_b64: str, what: str) -> tuple[int, bytes]:
    try:
        raw = base64.b64decode(data_b64, validate=True)
        key_id = int(key_id_hex, 16)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"malformed {what} key for {name!r}") from None
    if len(key_id_hex) != 8 or len(raw) != 33 or raw[0] != ALG_ED25519:
        raise CheckpointError(f"malformed {what} key for {name!r} (expected an Ed25519 key)")
    return key_id, raw[1:]


@dataclass(frozen=True)
class NoteVerifier:
    """An Ed25519 public key with its note name and key id."""

    name: str
    key_id: int
    public_key: bytes

    @classmethod
    def from_key(cls, vkey: str) -> NoteVerifier:
        """Parse ``<name>+<hex key id>+<base64 key>``; the key id must match the key."""
        parts = vkey.strip().split("+", 2)  # the base64 key itself may hold '+'
        if len(parts) != 3:
            raise CheckpointError("malformed verifier key: expected <name>+<key id>+<key>")
        name = _check_name(parts[0])
        key_id, public = _decode_key(name, parts[1], parts[2], "verifier")
        if key_id != _key_id(name, public):
            raise CheckpointError(f"verifier key for {name!r}: key id {parts[1]} does not match the key")
        return cls(name, key_id, public)

    def to_key(self) -> str:
        data = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id:08x}+{data}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, repr=False)
class NoteSigner:
    """An Ed25519 private key (its 32-byte seed) with its note name. ``repr`` never shows the seed."""

    name: str
    seed: bytes

    def __repr__(self) -> str:
        return f"NoteSigner(name={self.name!r}, key_id={self.verifier().key_id:08x})"

    @classmethod
    def generate(cls, name: str, seed: bytes | None = None) -> NoteSigner:
        """A new key named ``name`` (``seed`` only for fixed test keys)."""
        seed = os.urandom(32) if seed is None else seed
        if len(seed) != 32:
            raise CheckpointError("an Ed25519 seed is 32 bytes")
        return cls(_check_name(name), seed)

    @classmethod
    def from_key(cls, skey: str) -> NoteSigner:
        """Parse ``PRIVATE+KEY+<name>+<hex key id>+<base64 seed>``; the key id must match the key."""
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise CheckpointError("malformed signer key: expected PRIVATE+KEY+<name>+<key id>+<key>")
        name = _check_name(parts[2])
        key_id, seed = _decode_key(name, parts[3], parts[4], "signer")
        signer = cls(name, seed)
        if key_id != signer.verifier().key_id:
            raise CheckpointError(f"signer key for {name!r}: key id {parts[3]} does not match the key")
        return signer

    def to_key(self) -> str:
        data = base64.b64encode(bytes([ALG_ED25519]) + self.seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier().key_id:08x}+{data}"

    def verifier(self) -> NoteVerifier:
        public = Ed25519PrivateKey.from_private_bytes(self.seed).public_key()
        raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return NoteVerifier(self.name, _key_id(self.name, raw), raw)

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def _check_text(text: str) -> None:
    # The note spec allows no ASCII control character but newline: a tab or CR could make two
    # readers disagree about what was signed.
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise CheckpointError("malformed note: control character in text")


def sign_note(body: str, signer: NoteSigner) -> str:
    """``body`` followed by a blank line and one signature line by ``signer``."""
    _check_text(body)
    if not body.endswith("\n") or "\n\n" in body:
        raise CheckpointError("malformed note: text must end with one newline and hold no blank line")
    key_id = signer.verifier().key_id
    sig = base64.b64encode(key_id.to_bytes(4, "big") + signer.sign(body.encode())).decode()
    return f"{body}\n{SIG_PREFIX}{signer.name} {sig}\n"


def open_note(text: str, verifier: NoteVerifier) -> str:
    """The body of ``text`` if ``verifier`` signed it; signatures by other keys are ignored.

    Raises :class:`CheckpointError` if the note is malformed, if a signature by ``verifier``'s key
    does not verify, or if there is none.
    """
    _check_text(text)
    split = text.rfind("\n\n")
    if split < 0 or not text.endswith("\n"):
        raise CheckpointError("malformed note: no blank line before the signatures")
    body, lines = text[: split + 1], text[split + 2 : -1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    verified = False
    for line in lines:
        name, _, b64 = line.removeprefix(SIG_PREFIX).partition(" ")
        try:
            sig = base64.b64decode(b64, validate=True)
        except binascii.Error:
            sig = b""
        if not line.startswith(SIG_PREFIX) or not name or len(sig) < 5:
            raise CheckpointError(f"malformed note: bad signature line {line!r}")
        if name != verifier.name or int.from_bytes(sig[:4], "big") != verifier.key_id:
            continue  # someone else's signature (a witness, say): not ours to judge
        if not verifier.verify(body.encode(), sig[4:]):
            raise CheckpointError(f"invalid signature by key {verifier.name}+{verifier.key_id:08x}")
        verified = True
    if not verified:
        raise CheckpointError(f"note is not signed by key {verifier.name}+{verifier.key_id:08x}")
    return body


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log named by ``origin`` had ``size`` leaves with Merkle root ``root``."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        """The tlog-checkpoint body, the text that is signed."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        if any(not line or "\n" in line for line in lines) or len(self.root) != 32 or self.size < 0:
            raise CheckpointError(f"checkpoint for {self.origin!r} cannot be written as a note")
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        """Read a tlog-checkpoint body (already verified: this checks format only)."""
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "" or not all(lines[:-1]):
            raise CheckpointError("malformed checkpoint: expected origin, size and root lines")
        origin, size, root_b64, *extensions = lines[:-1]
        if not _DECIMAL.fullmatch(size) or int(size) >= 2**64:
            raise CheckpointError(f"malformed checkpoint: tree size {size!r}")
        try:
            root = base64.b64decode(root_b64, validate=True)
        except binascii.Error:
            root = b""
        if len(root) != 32 or base64.b64encode(root).decode() != root_b64:
            raise CheckpointError(f"malformed checkpoint: root hash {root_b64!r}")
        return cls(origin, int(size), root, tuple(extensions))


def sign_checkpoint(cp: Checkpoint, signer: NoteSigner) -> str:
    """The checkpoint as a signed note."""
    return sign_note(cp.body(), signer)


def open_checkpoint(text: str, verifier: NoteVerifier) -> Checkpoint:
    """The checkpoint in ``text`` if ``verifier`` signed it; :class:`CheckpointError` otherwise."""
    return Checkpoint.parse(open_note(text, verifier))
