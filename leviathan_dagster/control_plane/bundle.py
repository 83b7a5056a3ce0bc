"""The event bundle (seed 003): strict JSON parsing and schema validation, before anything is written.

A bundle is ``{"target", "bundle_id", "events": [{event_id, event_type, timestamp, actor_id, payload}],
"artifacts": [{name, sha256, bytes}]}``. Every problem is reported with its field path
(``events[2].timestamp: required``), all of them at once, so a producer fixes its bundle in one round.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from leviathan_dagster.core.events.chain import InvalidEvent, canonical_event_bytes
from leviathan_dagster.core.events.model import Event, format_timestamp, parse_timestamp
from leviathan_dagster.core.events.schemas import EVENT_SCHEMAS, MAX_INT, event_problems

MAX_PROBLEMS = 50
# How far past the control plane's clock an event's times may be: clocks of producers drift, but a day
# ahead is a wrong clock, not drift (``control-plane serve --max-clock-ahead``).
MAX_CLOCK_AHEAD_SECONDS = 86_400
MAX_ID_LENGTH = 200
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # full-matched: "abc\n" is not an id
_EVENT_TYPE_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_EVENT_FIELDS = ("event_id", "event_type", "timestamp", "actor_id", "payload")
_BUNDLE_FIELDS = ("target", "bundle_id", "events", "artifacts")


class MalformedBody(ValueError):
    """The body is not a single valid JSON document (HTTP 400)."""


class InvalidBundle(ValueError):
    """The JSON does not match the bundle schema (HTTP 422). ``problems`` names every bad field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems[:MAX_PROBLEMS]
        super().__init__(problems[0])


@dataclass(frozen=True)
class Bundle:
    target: str
    bundle_id: str
    events: list[Event]
    artifacts: list[dict[str, Any]]


def parse_json(body: bytes) -> Any:
    """Parse strictly: UTF-8 only, no duplicate keys, no NaN/Infinity (canonical JSON can hold neither,
    and a duplicate key means two readers may disagree about which value was meant)."""
    try:
        text = body.decode("utf-8")
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise MalformedBody(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise MalformedBody("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # our hooks, and integers too long to convert
        raise MalformedBody(f"invalid JSON: {exc}") from None


def validate_bundle(data: Any) -> Bundle:
    """The bundle in ``data``, or :class:`InvalidBundle` listing every problem."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise InvalidBundle([f"body: must be an object, got {_kind(data)}"])
    problems += [f"{key}: unexpected field" for key in data if key not in _BUNDLE_FIELDS]
    target = _check_id(data, "target", "", problems, pattern=_ID_RE)
    bundle_id = _check_id(data, "bundle_id", "", problems)
    events: list[Event] = []
    raw_events = data.get("events")
    if raw_events is None:
        problems.append("events: required")
    elif not isinstance(raw_events, list) or not raw_events:
        problems.append(_must("events", raw_events, "a non-empty list"))
    else:
        for index, raw in enumerate(raw_events):
            event = _check_event(raw, f"events[{index}]", problems)
            if event is not None:
                events.append(event)
    artifacts = _check_artifacts(data.get("artifacts", []), problems)
    if problems:
        raise InvalidBundle(problems)
    return Bundle(target=str(target), bundle_id=str(bundle_id), events=events, artifacts=artifacts)


def inconsistencies(bundle: Bundle) -> list[str]:
    """What makes a schema-valid bundle contradict itself (HTTP 409): rules across fields that a JSON
    Schema cannot state, kept apart so that the published schema is exactly the 422 check."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for index, event in enumerate(bundle.events):
        if event.event_id in seen:
            problems.append(f"events[{index}].event_id: repeats events[{seen[event.event_id]}]")
        seen.setdefault(event.event_id, index)
        # One bundle speaks for one target: an event about another target in it is a producer bug.
        target_id = event.payload.get("target_id")
        if target_id is not None and target_id != bundle.target:
            problems.append(
                f"events[{index}].payload.target_id: {target_id!r} differs from the bundle's target "
                f"{bundle.target!r}"
            )
    return problems[:MAX_PROBLEMS]


def ahead_of_clock(bundle: Bundle, now: datetime, max_ahead_seconds: int) -> list[str]:
    """Times in the bundle (each event's ``timestamp`` and its payload's time fields) later than
    ``max_ahead_seconds`` past the receiver's clock ``now`` (HTTP 409, like the other rules a JSON
    Schema cannot state). The schema's fixed 2000..2099 range alone let a producer with a wrong clock
    write events decades ahead, which every projection then sorts and measures by."""
    latest = now + timedelta(seconds=max_ahead_seconds)
    problems: list[str] = []
    for index, event in enumerate(bundle.events):
        schema = EVENT_SCHEMAS.get(event.event_type, {})
        times = [("timestamp", event.timestamp)] + [
            (f"payload.{name}", event.payload.get(name))
            for name, spec in schema.items()
            if spec.kind == "timestamp" and isinstance(event.payload.get(name), str)
        ]
        for field_name, value in times:
            if parse_timestamp(value) > latest:
                problems.append(
                    f"events[{index}].{field_name}: {value!r} is more than {max_ahead_seconds} s ahead of "
                    f"the control plane's clock ({format_timestamp(now)}); fix the producer's clock "
                    "(or raise control-plane serve --max-clock-ahead)"
                )
    return problems[:MAX_PROBLEMS]


def _check_event(raw: Any, where: str, problems: list[str]) -> Event | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be an object, got {_kind(raw)}")
        return None
    before = len(problems)
    problems += [f"{where}.{key}: unexpected field" for key in raw if key not in _EVENT_FIELDS]
    event_id = _check_id(raw, "event_id", where, problems)
    event_type = _check_id(raw, "event_type", where, problems, pattern=_EVENT_TYPE_RE)
    actor_id = _check_id(raw, "actor_id", where, problems)
    timestamp = raw.get("timestamp")
    if timestamp is None:
        problems.append(f"{where}.timestamp: required")
    elif not isinstance(timestamp, str):
        problems.append(_must(f"{where}.timestamp", timestamp, "an RFC 3339 timestamp"))
    payload = raw.get("payload")
    if payload is None:
        problems.append(f"{where}.payload: required")
    elif not isinstance(payload, dict):
        problems.append(_must(f"{where}.payload", payload, "an object"))
    if len(problems) > before:
        return None
    event = Event(str(event_id), str(event_type), str(timestamp), str(actor_id), payload)
    # The event type's own schema (core.events.schemas): the same check every reader makes before folding.
    problems += event_problems(event, where)
    if len(problems) > before:
        return None
    try:
        canonical_event_bytes(event)  # what the store would refuse (integers beyond 2**53, ...)
    except InvalidEvent as exc:
        problems.append(f"{where}: {exc}")
        return None
    return event


def _check_artifacts(raw: Any, problems: list[str]) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        problems.append(_must("artifacts", raw, "a list"))
        return []
    for index, entry in enumerate(raw):
        where = f"artifacts[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be an object, got {_kind(entry)}")
            continue
        problems += [f"{where}.{k}: unexpected field" for k in entry if k not in ("name", "sha256", "bytes")]
        _check_id(entry, "name", where, problems)
        if not isinstance(entry.get("sha256"), str) or not _SHA256_RE.fullmatch(entry["sha256"]):
            problems.append(_must(f"{where}.sha256", entry.get("sha256"), "64 lowercase hex digits"))
        if not _is_int(entry.get("bytes")) or not 0 <= entry["bytes"] <= MAX_INT:
            problems.append(_must(f"{where}.bytes", entry.get("bytes"), f"an integer in 0..{MAX_INT}"))
    return raw


def _check_id(
    obj: dict[str, Any], name: str, where: str, problems: list[str], *, pattern: re.Pattern | None = None
) -> str | None:
    path = f"{where}.{name}" if where else name
    value = obj.get(name)
    if value is None:
        problems.append(f"{path}: required")
    elif not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        problems.append(_must(path, value, f"a non-empty string of at most {MAX_ID_LENGTH} characters"))
    elif pattern is not None and not pattern.fullmatch(value):
        problems.append(f"{path}: {value!r} must match {pattern.pattern}")
    else:
        return value
    return None


def _is_int(value: Any) -> bool:
    # As JSON Schema counts integers: 493.0 is one.
    integral = isinstance(value, float) and value.is_integer()
    return (isinstance(value, int) or integral) and not isinstance(value, bool)


def _must(path: str, value: Any, wanted: str) -> str:
    shown = repr(value) if isinstance(value, str | int | float | bool) else _kind(value)
    return f"{path}: must be {wanted}, got {shown[:80]}"


def _kind(value: Any) -> str:
    if value == []:
        return "an empty list"
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (canonical JSON has no NaN or Infinity)")
