"""Walking a stored chain link by link, shared by every backend's ``verify``: what counts as damage,
what kind it is, and how it becomes a :class:`VerifyReport`."""

from __future__ import annotations

import json
from typing import Any

from leviathan_dagster.core.events.chain import MAX_SAFE_INT, InvalidEvent, canonical_event_bytes, chain_hash
from leviathan_dagster.core.events.model import Event, VerifyReport

# The kinds of damage a report can name. "torn" is a tail whose append never returned; "truncated" is
# acknowledged events missing from the end (visible only where a head is stored apart from the events).
DAMAGE_KINDS = (
    "modified",
    "deleted",
    "inserted",
    "reordered",
    "truncated",
    "torn",
    "malformed",
    "spliced",
)
_EVENT_KEYS = ("actor_id", "event_id", "event_type", "payload", "timestamp")
_EVENT_ID_KEY = b'","event_id":"'


class Damage(Exception):
    """The first problem found in a chain (internal; becomes a report)."""

    def __init__(self, kind: str, reason: str) -> None:
        assert kind in DAMAGE_KINDS, kind
        self.kind = kind
        self.reason = reason
        super().__init__(reason)


def parse_event_body(body: bytes) -> Event:
    """The event stored as ``body``; ``ValueError`` unless it is strict JSON with exactly the five fields
    (duplicate keys and NaN/Infinity are refused: json.loads would silently accept both)."""
    try:
        record = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_int=_json_int,
        )
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(record, dict) or sorted(record) != list(_EVENT_KEYS):
        raise ValueError(f"expected an object with the keys {list(_EVENT_KEYS)}")
    for key in ("event_id", "event_type", "timestamp", "actor_id"):
        if not isinstance(record[key], str):
            raise ValueError(f"{key} is not a string")
    if not isinstance(record["payload"], dict):
        raise ValueError("payload is not an object")
    return Event(
        event_id=record["event_id"],
        event_type=record["event_type"],
        timestamp=record["timestamp"],
        actor_id=record["actor_id"],
        payload=record["payload"],
    )


def event_id_of(body: bytes) -> str:
    """The event_id of canonical event bytes, usually without parsing them.

    Canonical JSON sorts keys, so the body reads ``{"actor_id":"…","event_id":"…",…``. Inside a string
    every ``"`` is escaped, so the byte sequence ``","event_id":"`` can only be the real key, and the
    id ends at the next ``"`` unless it holds an escape, in which case we parse properly.
    """
    start = body.find(_EVENT_ID_KEY)
    if start >= 0:
        start += len(_EVENT_ID_KEY)
        end = body.find(b'"', start)
        value = body[start:end]
        if end >= 0 and b"\\" not in value:
            return value.decode("utf-8")
    return parse_event_body(body).event_id


class ChainWalk:
    """Checks records in stored order against the chain; ``count``/``head`` are the last good link.

    With ``full`` each body is also parsed, re-canonicalised and compared byte for byte, so a writer
    that stored non-canonical bytes is caught; without it only the hashes are recomputed, which still
    catches any byte changed after writing (the hash covers the stored bytes themselves).
    """

    def __init__(self, genesis: str, *, full: bool) -> None:
        self.genesis = genesis
        self.full = full
        self.count = 0
        self.head = genesis

    def check(
        self, seq: int, prev_hash: str, hash_: str, body: bytes, columns: tuple[str, str] | None = None
    ) -> Event | None:
        """Accept one record or raise :class:`Damage`; returns the parsed event in full mode.

        ``columns`` are the (event_id, event_type) a backend stores beside the body, for lookups; they
        must agree with the body (in hash-only mode only the event_id is checked, without parsing).
        """
        expected = self.count + 1
        if seq > expected:
            raise Damage(
                "deleted",
                f"seq gap: record {expected} holds seq {seq}, so seq {expected}..{seq - 1} deleted",
            )
        if seq < expected:
            raise Damage("inserted", f"seq {seq} again at record {expected}: record inserted or duplicated")
        if prev_hash != self.head:
            if seq == 1:
                raise Damage(
                    "spliced",
                    "bad genesis: prev_hash of seq 1 is not this log's genesis hash "
                    "(log_id changed, or events spliced from another log)",
                )
            raise Damage(
                "modified",
                f"prev_hash of seq {seq} is not the hash of seq {seq - 1}: seq {seq - 1} rewritten, "
                "or records inserted, deleted or reordered",
            )
        if chain_hash(prev_hash, seq, body) != hash_:
            raise Damage("modified", f"hash mismatch at seq {seq}: event contents modified")
        event = self._check_canonical(seq, body) if self.full else None
        if columns is not None:
            try:
                stored = (event.event_id, event.event_type) if event else (event_id_of(body), columns[1])
            except ValueError:
                stored = None
            if stored != columns:
                raise Damage("modified", f"the event_id or event_type stored beside seq {seq} differ from it")
        self.count, self.head = seq, hash_
        return event

    def _check_canonical(self, seq: int, body: bytes) -> Event:
        try:
            event = parse_event_body(body)
            canonical = canonical_event_bytes(event)
        except (ValueError, InvalidEvent) as exc:
            raise Damage("malformed", f"event at seq {seq} is not a valid event: {exc}") from None
        if canonical != body:
            raise Damage("malformed", f"event at seq {seq} is not stored in canonical form")
        return event

    def report(self, damage: Damage | None = None) -> VerifyReport:
        if damage is None:
            return VerifyReport(ok=True, events=self.count, head_hash=self.head)
        return VerifyReport(
            ok=False,
            events=self.count,
            head_hash=self.head,
            first_bad_seq=self.count + 1,
            reason=damage.reason,
            kind=damage.kind,
        )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in object")
    return result


def _json_int(text: str) -> int | float:
    # Canonical JSON writes every number as an ES6 double would print it, so the float 1e16 is stored
    # as 10000000000000000. Ingestion refuses integers beyond ±(2**53 - 1), so such a literal can only
    # have been a float: read it back as one, and it re-canonicalises to the very same bytes.
    value = int(text)
    return value if -MAX_SAFE_INT <= value <= MAX_SAFE_INT else float(value)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")
