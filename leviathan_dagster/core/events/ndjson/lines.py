"""One line of the NDJSON event log (format v2): its one encoding, and taking it apart without a JSON parser.

A line is ``{"seq":N,"prev_hash":"<64 hex>","hash":"<64 hex>","event":<canonical bytes>}\\n``. Everything
but ``N`` and the event has a fixed width, so a verifier finds the canonical event bytes by slicing and
hashes them as stored; only ``read`` and a full verify parse the event itself.
"""

from __future__ import annotations

import re

from leviathan_dagster.core.events.chain_check import parse_event_body
from leviathan_dagster.core.events.model import StoredEvent

_SEQ = b'{"seq":'
_PREV = b',"prev_hash":"'
_HASH = b'","hash":"'
_EVENT = b'","event":'
_END = b"}\n"
# Offsets relative to the comma after the seq digits.
_PREV_AT = len(_PREV)
_HASH_KEY_AT = _PREV_AT + 64
_HASH_AT = _HASH_KEY_AT + len(_HASH)
_EVENT_KEY_AT = _HASH_AT + 64
_BODY_AT = _EVENT_KEY_AT + len(_EVENT)
_MAX_SEQ_DIGITS = 19  # a signed 64-bit seq, as PostgreSQL stores it
_HEX64 = re.compile(rb"[0-9a-f]{64}")


class BadLine(ValueError):
    """A line that is not a well-formed event record (internal; surfaces as a verify reason)."""


def encode_line(seq: int, prev_hash: str, hash_: str, body: bytes) -> bytes:
    """The one serialization of a stored event: the canonical event bytes embedded verbatim."""
    return b'{"seq":%d,"prev_hash":"%s","hash":"%s","event":%s}\n' % (
        seq,
        prev_hash.encode("ascii"),
        hash_.encode("ascii"),
        body,
    )


def split_line(raw: bytes) -> tuple[int, bytes, bytes, bytes]:
    """(seq, prev_hash, hash, body) of a complete line, by position only; ``BadLine`` if the frame is off.

    The hashes come back as the ASCII bytes found; the caller compares them with what it expects, so
    every byte of the frame is checked by either this function or that comparison.
    """
    comma = raw.find(b",", len(_SEQ), len(_SEQ) + _MAX_SEQ_DIGITS + 1)
    if comma < 0 or not raw.startswith(_SEQ):
        raise BadLine('does not start with {"seq":N,')
    digits = raw[len(_SEQ) : comma]
    if not digits.isdigit() or digits.startswith(b"0"):
        raise BadLine(f"seq {digits!r} is not a positive integer")
    if (
        raw[comma : comma + _PREV_AT] != _PREV
        or raw[comma + _HASH_KEY_AT : comma + _HASH_AT] != _HASH
        or raw[comma + _EVENT_KEY_AT : comma + _BODY_AT] != _EVENT
        or not raw.endswith(_END)
        or len(raw) < comma + _BODY_AT + len(_END) + 2  # at least "{}" as the event
    ):
        raise BadLine('expected {"seq":N,"prev_hash":"…","hash":"…","event":{…}}')
    return (
        int(digits),
        raw[comma + _PREV_AT : comma + _HASH_KEY_AT],
        raw[comma + _HASH_AT : comma + _EVENT_KEY_AT],
        raw[comma + _BODY_AT : -len(_END)],
    )


def parse_line(raw: bytes) -> StoredEvent:
    """A complete line as a StoredEvent (hashes are not re-checked); ``BadLine`` if malformed."""
    seq, prev_hash, hash_, body = split_line(raw)
    if not _HEX64.fullmatch(prev_hash) or not _HEX64.fullmatch(hash_):
        raise BadLine("prev_hash or hash is not 64 lowercase hex digits")
    try:
        event = parse_event_body(body)
    except ValueError as exc:
        raise BadLine(f"event unparseable: {exc}") from None
    return StoredEvent(seq, event, prev_hash.decode("ascii"), hash_.decode("ascii"), body)
