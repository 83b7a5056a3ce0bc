"""The hash chain shared by every event-log backend: canonical event bytes, genesis and link hashes.

A backend stores events however it likes; what it must agree on is these three functions, so that a
log exported from one backend verifies in another and a verifier needs no knowledge of storage.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import rfc8785

from leviathan_dagster.core.errors import LeviathanError
from leviathan_dagster.core.events.model import Event

# I-JSON (RFC 7493) "safe" integers. Beyond this a JSON number is a double on most readers, so two
# consumers could disagree on the value behind a hash; rfc8785 rejects ±2**53 itself, and so do we.
MAX_SAFE_INT = 2**53 - 1
GENESIS_PREFIX = b"leviathan-event-log/v1\x00"


class InvalidEvent(LeviathanError):
    """An event whose fields cannot be hashed faithfully (not representable as canonical JSON)."""


def canonical_event_bytes(event: Event) -> bytes:
    """RFC 8785 canonical JSON of ``event.body()``: the exact bytes the chain hashes.

    Raises :class:`InvalidEvent` for anything canonical JSON cannot hold without loss: NaN or
    infinite floats, integers outside ±(2**53 - 1), non-string keys, strings with lone surrogates,
    and any type that is not dict, list, str, int, float, bool or None (tuples included: they
    would come back from storage as lists, so accepting them would hide a type change).
    """
    for name in ("event_id", "event_type", "timestamp", "actor_id"):
        value = getattr(event, name)
        if not isinstance(value, str) or not value:
            raise InvalidEvent(f"event {name} must be a non-empty string, got {value!r}")
    if not isinstance(event.payload, dict):
        raise InvalidEvent(f"event payload must be a dict, got {type(event.payload).__name__}")
    _check_json_value(event.payload, "payload")
    try:
        return rfc8785.dumps(event.body())
    except rfc8785.CanonicalizationError as exc:  # a case the walk above missed; still the caller's input
        raise InvalidEvent(f"event {event.event_id}: {exc}") from exc


def genesis_hash(log_id: str) -> str:
    """The ``prev_hash`` of seq 1. It binds the chain to the log's identity, so events of one log
    cannot be spliced onto the start of another and still verify."""
    return hashlib.sha256(GENESIS_PREFIX + log_id.encode("utf-8")).hexdigest()


def chain_hash(prev_hash: str, seq: int, event_bytes: bytes) -> str:
    """The hash of the event at ``seq``: it covers the previous link, the position and the content."""
    digest = hashlib.sha256(event_bytes).digest()
    return hashlib.sha256(bytes.fromhex(prev_hash) + seq.to_bytes(8, "big") + digest).hexdigest()


def _check_json_value(value: Any, where: str) -> None:
    # bool before int: bool is an int subclass and is fine as JSON true/false.
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidEvent(f"{where}: string is not valid Unicode ({exc.reason})") from None
    elif isinstance(value, int):
        if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            raise InvalidEvent(f"{where}: integer {value} is outside ±(2**53 - 1)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEvent(f"{where}: float {value} is not representable in JSON")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json_value(item, f"{where}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidEvent(f"{where}: key {key!r} is not a string")
            _check_json_value(key, f"{where} key")
            _check_json_value(item, f"{where}.{key}")
    else:
        raise InvalidEvent(f"{where}: {type(value).__name__} is not a JSON type")
