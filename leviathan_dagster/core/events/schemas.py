"""One schema per event type: what the control plane accepts, what every fold trusts, what OpenAPI says.

Three users, one table (:data:`EVENT_SCHEMAS`), so they cannot drift apart:

- the control plane refuses an event that does not match (422 naming the field: ``events[0].payload.
  completed_at: ...``);
- every projection (attempt ledger, graph, metrics, attempt details) calls :func:`fold_anomaly` at the
  top of its per-event apply, and skips an event already in a log that does not match, reporting it as
  an anomaly of its attempt or target instead of crashing the cycle (the log is append-only: a poisoned
  event stays forever, so a reader that trips over it would trip over it on every later cycle);
- :func:`event_json_schema` renders the same table as JSON Schema for the published OpenAPI document.

Timestamps are RFC 3339 with an explicit offset, between 2000-01-01 and 2099-12-31, and the pattern
itself only admits real calendar dates, so the JSON Schema and the check here accept exactly the same
strings. Payload fields not in a schema are allowed (producers add details), within a size bound.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from leviathan_dagster.core.events import model as ev
from leviathan_dagster.core.events.model import Event, StoredEvent

ID_MAX = 100
ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{ID_MAX - 1}}}$"
ACTOR_MAX = 200
# Operator names come from people ("operator:Jane Doe"): any text without control characters.
ACTOR_PATTERN = rf"^[^\x00-\x1f\x7f]{{1,{ACTOR_MAX}}}$"
EVENT_ID_PATTERN = ID_PATTERN
TEXT_MAX = 4000
MAX_PAYLOAD_BYTES = 65_536
MAX_INT = 2**53 - 1
_DAY = r"(0[1-9]|1[0-9]|2[0-8])"
_DATE = (
    r"20[0-9]{2}-(" + rf"(0[1-9]|1[0-2])-{_DAY}"
    r"|(0[13-9]|1[0-2])-(29|30)"
    r"|(0[13578]|1[02])-31)"
    r"|20([02468][048]|[13579][26])-02-29"
)
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
_OFFSET = r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
TIMESTAMP_PATTERN = rf"^({_DATE})T{_TIME}{_OFFSET}$"
_FULL = {
    "id": re.compile(ID_PATTERN.removesuffix("$") + r"\Z"),
    "actor": re.compile(ACTOR_PATTERN.removesuffix("$") + r"\Z"),
    "timestamp": re.compile(TIMESTAMP_PATTERN.removesuffix("$") + r"\Z"),
    "sha256": re.compile(r"^[0-9a-f]{64}\Z"),
}

logger = logging.getLogger(__name__)
_warned: set[str] = set()
_MAX_WARNED = 10_000


@dataclass(frozen=True)
class Field:
    """One payload field: its kind (``id``, ``text``, ``timestamp``, ``positive``, ``count``, ``number``,
    ``object``, ``list``, ``sha256``), whether it is required, and whether null is allowed."""

    kind: str
    required: bool = False
    nullable: bool = False


_ID, _TEXT, _TS = Field("id", True), Field("text"), Field("timestamp")
_ATTEMPT = {"attempt_id": _ID, "target_id": _ID, "task_id": _ID}
_ENDED = {
    **_ATTEMPT,
    "status": _TEXT,
    "completed_at": _TS,
    "attempt_number": Field("positive"),
    "duration_seconds": Field("number"),
    "branch_name": _TEXT,
    "commit_sha": _TEXT,
    "pr_number": Field("positive", nullable=True),
    "pr_url": Field("text", nullable=True),
    # Model calls, tokens and USD of the attempt (UsageRecorder.summary(), with its ``generator``);
    # absent in older logs and when the orchestrator records a worker that died.
    "usage": Field("object", nullable=True),
    "generator": Field("text", nullable=True),
    "artifacts": Field("list"),
    "error_summary": Field("text", nullable=True),
}
EVENT_SCHEMAS: dict[str, dict[str, Field]] = {
    ev.ATTEMPT_CREATED: {
        **_ATTEMPT,
        "attempt_number": Field("positive", True),
        "created_at": _TS,
        "branch_name": _TEXT,
        "executor": _TEXT,
        "run_id": Field("text", nullable=True),
        "status": _TEXT,
    },
    ev.ATTEMPT_STARTED: {**_ATTEMPT, "status": _TEXT, "started_at": _TS},
    ev.ATTEMPT_SUCCEEDED: {**_ENDED, "failure_type": Field("text", nullable=True)},
    ev.ATTEMPT_FAILED: {**_ENDED, "failure_type": Field("text", True)},
    ev.PR_CREATED: {**_ATTEMPT, "pr_number": Field("positive", True), "pr_url": _TEXT, "branch_name": _TEXT},
    ev.PR_MERGED: {
        "target_id": _ID,
        "pr_number": Field("positive", True),
        "task": Field("text", nullable=True),
        "merged_at": Field("timestamp", nullable=True),
    },
    ev.PR_CLOSED: {
        "target_id": _ID,
        "pr_number": Field("positive", True),
        "task": Field("text", nullable=True),
        "closed_at": Field("timestamp", nullable=True),
    },
    ev.RETRY_SCHEDULED: {
        "target_id": _ID,
        "task_id": _ID,
        "retry_number": Field("positive", True),
        "backoff_seconds": Field("count"),
        "scheduled_at": _TS,
    },
    ev.TASK_COMPLETED: {"target_id": _ID, "task_id": _ID, "status": _TEXT},
    ev.TASK_ESCALATED: {"target_id": _ID, "task_id": _ID, "failures": Field("count")},
    ev.TASK_ESCALATION_CLEARED: {
        "target_id": _ID,
        "task_id": _ID,
        "cleared": _TEXT,
        "attempts_before": Field("count"),
        "reason": Field("text", nullable=True),
    },
    ev.CIRCUIT_OPENED: {
        "target_id": _ID,
        "consecutive_failures": Field("count"),
        "threshold": Field("count"),
    },
    ev.CIRCUIT_RESET: {"target_id": _ID},
    ev.TARGET_PAUSED: {"target_id": _ID, "reason": Field("text", nullable=True)},
    ev.TARGET_RESUMED: {"target_id": _ID},
    ev.RUN_NOW_REQUESTED: {"target_id": _ID, "task_id": _ID},
    ev.CANCEL_REQUESTED: {"attempt_id": _ID, "target_id": Field("id")},
    ev.TAIL_QUARANTINED: {
        "quarantine_file": Field("text", True),
        "offset": Field("count", True),
        "length": Field("count", True),
        "sha256": Field("sha256", True),
    },
}
# Who may append what through the control plane (see control_plane.tokens): operator actions need an
# operator token; a worker token only the events of its own attempt.
OPERATOR_EVENTS = frozenset(
    {ev.CIRCUIT_RESET, ev.TARGET_PAUSED, ev.TARGET_RESUMED, ev.RUN_NOW_REQUESTED, ev.TASK_ESCALATION_CLEARED}
)
WORKER_EVENTS = frozenset({ev.ATTEMPT_STARTED, ev.ATTEMPT_SUCCEEDED, ev.ATTEMPT_FAILED, ev.PR_CREATED})


@dataclass(frozen=True)
class Anomaly:
    """An event in the log that a reader refused to fold, and for whom it was meant."""

    seq: int
    event_type: str
    problem: str
    attempt_id: str | None = None
    target_id: str | None = None


def event_problems(event: Event, where: str = "", *, check_size: bool = True) -> list[str]:
    """Every way ``event`` breaks its schema, each as ``<path>: <problem>`` (empty when it is valid).

    ``check_size=False`` (readers) skips the payload size bound, which only the door needs to enforce.
    """
    prefix = f"{where}." if where else ""
    problems: list[str] = []
    for name, kind in (("event_id", "id"), ("actor_id", "actor"), ("timestamp", "timestamp")):
        value = getattr(event, name)
        problem = None if _VALID[kind](value) else _check(kind, value)
        if problem:
            problems.append(f"{prefix}{name}: {problem}")
    schema = EVENT_SCHEMAS.get(event.event_type)
    if schema is None:
        known = ", ".join(sorted(EVENT_SCHEMAS))
        return [*problems, f"{prefix}event_type: {event.event_type!r} is not a known event type ({known})"]
    payload = event.payload
    if not isinstance(payload, dict):
        return [*problems, f"{prefix}payload: must be an object"]
    for name, spec in schema.items():
        value = payload.get(name)
        if name not in payload:
            if spec.required:
                problems.append(f"{prefix}payload.{name}: required for {event.event_type}")
            continue
        if value is None and spec.nullable:
            continue
        problem = None if _VALID[spec.kind](value) else _check(spec.kind, value)
        if problem:
            problems.append(f"{prefix}payload.{name}: {problem}")
    size = _size(payload, problems, f"{prefix}payload") if check_size else 0
    if size > MAX_PAYLOAD_BYTES:
        problems.append(f"{prefix}payload: about {size} bytes, more than {MAX_PAYLOAD_BYTES}")
    return problems


def fold_anomaly(stored: StoredEvent) -> Anomaly | None:
    """None if a projection may fold ``stored``; else the :class:`Anomaly` to report (and a warning).

    Called first in every per-event apply. Only event types with a schema are checked: the folds ignore
    every other type anyway, so an unknown type is never a reason to stop.
    """
    if stored.event_type not in EVENT_SCHEMAS or _looks_valid(stored.event):
        return None
    problems = event_problems(stored.event, check_size=False)
    if not problems:
        return None
    payload = stored.payload if isinstance(stored.payload, dict) else {}
    anomaly = Anomaly(
        seq=stored.seq,
        event_type=stored.event_type,
        problem="; ".join(problems[:5]),
        attempt_id=_str_or_none(payload.get("attempt_id")),
        target_id=_str_or_none(payload.get("target_id")),
    )
    if stored.hash in _warned:  # every cycle folds the log again: say it once per process
        return anomaly
    if len(_warned) < _MAX_WARNED:
        _warned.add(stored.hash)
    logger.warning(
        "event log: seq %d (%s, target %s, attempt %s) is malformed and was not folded: %s",
        anomaly.seq,
        anomaly.event_type,
        anomaly.target_id,
        anomaly.attempt_id,
        anomaly.problem,
    )
    return anomaly


def _string_matching(pattern: re.Pattern[str]) -> Any:
    match = pattern.match
    return lambda value: type(value) is str and match(value) is not None


# The common case, answered fast (every fold runs these on every event); False only means "look closer":
# ``_check`` then gives the exact verdict and its message (it also accepts 403.0 as an integer).
_VALID = {
    "id": _string_matching(_FULL["id"]),
    "actor": _string_matching(_FULL["actor"]),
    "timestamp": _string_matching(_FULL["timestamp"]),
    "sha256": _string_matching(_FULL["sha256"]),
    "text": lambda value: type(value) is str and len(value) <= TEXT_MAX,
    "positive": lambda value: type(value) is int and 1 <= value <= MAX_INT,
    "count": lambda value: type(value) is int and 0 <= value <= MAX_INT,
    "number": lambda value: type(value) in (int, float) and 0 <= value <= MAX_INT,
    "object": lambda value: type(value) is dict,
    "list": lambda value: type(value) is list,
}


_MISSING = object()


def _looks_valid(event: Event) -> bool:
    """The fast path of :func:`fold_anomaly` (every fold runs it on every event): True means valid;
    False means :func:`event_problems` must look (and may still find nothing, e.g. for 403.0)."""
    fields = _COMPILED[event.event_type]
    if not (_IS_ID(event.event_id) and _IS_ACTOR(event.actor_id) and _IS_TIME(event.timestamp)):
        return False
    payload = event.payload
    if type(payload) is not dict:
        return False
    for name, required, nullable, valid in fields:
        value = payload.get(name, _MISSING)
        if value is _MISSING:
            if required:
                return False
        elif not (valid(value) or (nullable and value is None)):
            return False
    return True


_IS_ID, _IS_ACTOR, _IS_TIME = _VALID["id"], _VALID["actor"], _VALID["timestamp"]
_COMPILED = {
    event_type: tuple(
        (name, spec.required, spec.nullable, _VALID[spec.kind]) for name, spec in fields.items()
    )
    for event_type, fields in EVENT_SCHEMAS.items()
}


def _check(kind: str, value: Any) -> str | None:
    if kind in ("id", "actor", "timestamp", "sha256", "text"):
        if not isinstance(value, str):
            return f"must be a string, got {_kind(value)}"
        if kind == "text":
            return None if len(value) <= TEXT_MAX else f"longer than {TEXT_MAX} characters"
        if not _FULL[kind].match(value):
            return {
                "id": f"{value[:120]!r} must match [A-Za-z0-9][A-Za-z0-9._-]* (at most {ID_MAX} characters)",
                "actor": f"must be 1 to {ACTOR_MAX} characters, none a control character; "
                f"got {value[:120]!r}",
                "timestamp": f"{value[:60]!r} is not an RFC 3339 time with an offset between 2000 and 2099 "
                "(e.g. 2026-01-31T12:00:00.000000Z)",
                "sha256": "must be 64 lowercase hex digits",
            }[kind]
        return None
    if kind in ("positive", "count"):
        # JSON Schema's "integer" is any number with no fractional part (403.0 is one); canonical JSON
        # writes both the same way, so the stored event cannot tell them apart either.
        integral = isinstance(value, float) and value.is_integer()
        if not (isinstance(value, int) or integral) or isinstance(value, bool):
            return f"must be an integer, got {_kind(value)}"
        low = 1 if kind == "positive" else 0
        return None if low <= value <= MAX_INT else f"must be between {low} and {MAX_INT}, got {value}"
    if kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= MAX_INT
        return None if ok else f"must be a non-negative number, got {_kind(value)}"
    if kind == "object":
        return None if isinstance(value, dict) else f"must be an object, got {_kind(value)}"
    if kind == "list":
        return None if isinstance(value, list) else f"must be a list, got {_kind(value)}"
    raise AssertionError(kind)


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12, as OpenAPI 3.1 uses it) of one event: a ``oneOf`` with one branch per
    event type, each fixing ``event_type`` and describing its payload, generated from the same table."""
    branches = []
    for event_type, fields in sorted(EVENT_SCHEMAS.items()):
        payload = {
            "type": "object",
            "required": sorted(name for name, spec in fields.items() if spec.required),
            "properties": {name: _field_schema(spec) for name, spec in fields.items()},
            "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
        }
        branches.append(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["event_id", "event_type", "timestamp", "actor_id", "payload"],
                "properties": {
                    "event_id": {"type": "string", "pattern": EVENT_ID_PATTERN},
                    "event_type": {"const": event_type},
                    "timestamp": {"type": "string", "pattern": TIMESTAMP_PATTERN},
                    "actor_id": {"type": "string", "pattern": ACTOR_PATTERN},
                    "payload": payload,
                },
            }
        )
    return {"oneOf": branches}


JSON_VALUE_SCHEMA: dict[str, Any] = {
    "description": "Any JSON value whose numbers lie within ±(2**53 - 1).",
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "string"},
        {"type": "number", "minimum": -MAX_INT, "maximum": MAX_INT},
        {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
        {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/JsonValue"}},
    ],
}


def _field_schema(spec: Field) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "id": {"type": "string", "pattern": ID_PATTERN},
        "text": {"type": "string", "maxLength": TEXT_MAX},
        "timestamp": {"type": "string", "pattern": TIMESTAMP_PATTERN},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "positive": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
        "count": {"type": "integer", "minimum": 0, "maximum": MAX_INT},
        "number": {"type": "number", "minimum": 0, "maximum": MAX_INT},
        "object": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/JsonValue"}},
        "list": {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
    }[spec.kind]
    if spec.nullable:
        return {"anyOf": [schema, {"type": "null"}]}
    return schema


def _size(value: Any, problems: list[str], where: str) -> int:
    # A cheap upper estimate of the canonical JSON size, without serialising; on the way, every number
    # must lie within ±(2**53 - 1), as the published schema says (beyond it readers disagree on values).
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, dict):
        return 2 + sum(len(k) + 4 + _size(v, problems, f"{where}.{k}") for k, v in value.items())
    if isinstance(value, list):
        return 2 + sum(1 + _size(v, problems, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, int | float) and not isinstance(value, bool) and not -MAX_INT <= value <= MAX_INT:
        problems.append(f"{where}: number {value!r:.40} is outside ±(2**53 - 1)")
    return 24


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def is_id(value: object) -> bool:
    """Whether ``value`` is an id: ``[A-Za-z0-9][A-Za-z0-9._-]*``, full match, at most 100 characters."""
    return isinstance(value, str) and _FULL["id"].match(value) is not None
