"""Event value types and the whole event vocabulary: every event type Leviathan writes (seed 000 / 003)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from leviathan_dagster.core.redaction import redact_data

ATTEMPT_CREATED = "attempt.created"
ATTEMPT_STARTED = "attempt.started"
ATTEMPT_SUCCEEDED = "attempt.succeeded"
ATTEMPT_FAILED = "attempt.failed"
RETRY_SCHEDULED = "retry.scheduled"
TASK_COMPLETED = "task.completed"
TASK_ESCALATED = "task.escalated"
# An operator gave an escalated (or out-of-attempts) task a fresh attempt budget (core/attempts/operator.py).
TASK_ESCALATION_CLEARED = "task.escalation_cleared"
PR_CREATED = "pr.created"
PR_MERGED = "pr.merged"
PR_CLOSED = "pr.closed"
CIRCUIT_OPENED = "circuit.opened"
# Operator actions (core/attempts/operator.py); only operator tokens may append them.
CIRCUIT_RESET = "circuit.reset"
TARGET_PAUSED = "target.paused"
TARGET_RESUMED = "target.resumed"
RUN_NOW_REQUESTED = "operator.run_now"
CANCEL_REQUESTED = "attempt.cancel_requested"
# Dagster runs of attempt and operator jobs (core/attempts/run_events.py).
RUN_STARTED = "run.started"
RUN_SUCCEEDED = "run.succeeded"
RUN_FAILED = "run.failed"
RUN_CANCELED = "run.canceled"
# The appender moved a damaged tail aside (core/events/ndjson/tail.py).
TAIL_QUARANTINED = "log.tail_quarantined"


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 UTC with microseconds and a ``Z``: sortable as text, identical on every writer."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Event:
    """One event as written by its producer (the seed's five fields)."""

    event_id: str
    event_type: str
    timestamp: str
    actor_id: str
    payload: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(
        cls,
        event_type: str,
        payload: dict[str, Any],
        *,
        actor_id: str,
        event_id: str | None = None,
        at: datetime | None = None,
    ) -> Event:
        return cls(
            event_id=event_id or str(uuid.uuid4()),
            event_type=event_type,
            timestamp=format_timestamp(at or utc_now()),
            actor_id=actor_id,
            payload=redact_data(dict(payload)),  # before the hash: a chained secret is forever
        )

    def body(self) -> dict[str, Any]:
        """The fields covered by the hash, in the seed's names."""
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "timestamp": self.timestamp,
            "actor_id": self.actor_id,
            "payload": self.payload,
        }


@dataclass(frozen=True)
class StoredEvent:
    """An event with its place in the chain.

    ``body`` is the RFC 8785 canonical JSON of ``event.body()``, exactly the bytes the chain hashes and
    the backend stores; a verifier hashes these bytes without re-serialising the event.
    """

    seq: int
    event: Event
    prev_hash: str
    hash: str
    body: bytes = field(repr=False)

    @property
    def event_type(self) -> str:
        return self.event.event_type

    @property
    def payload(self) -> dict[str, Any]:
        return self.event.payload

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, **self.event.body(), "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of re-checking a chain: on failure, the first bad seq and the kind of damage."""

    ok: bool
    events: int
    head_hash: str
    first_bad_seq: int | None = None
    reason: str | None = None
    # One of chain_check.DAMAGE_KINDS: modified, deleted, inserted, reordered, truncated, torn, ...
    kind: str | None = None
    # For a torn tail (NDJSON): the byte range after the last newline, [start, end).
    byte_range: tuple[int, int] | None = None
