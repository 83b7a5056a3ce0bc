"""Dagster runs as events in Leviathan's log: started, succeeded, failed, canceled — each exactly once.

Run-status sensors are at-least-once and blind to runs that ended before their first tick, so both
the sensors and a reconciliation pass write events whose ids are derived from (run id, status): the
log's idempotent append turns every repeat into a no-op, and reconciliation back-fills whatever the
sensors missed.
"""

from __future__ import annotations

import uuid
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from leviathan_dagster.core.errors import ConflictError
from leviathan_dagster.core.events.model import (
    RUN_CANCELED,
    RUN_FAILED,
    RUN_STARTED,
    RUN_SUCCEEDED,
    Event,
    format_timestamp,
)
from leviathan_dagster.core.events.store import EventStore

TERMINAL = {"succeeded": RUN_SUCCEEDED, "failed": RUN_FAILED, "canceled": RUN_CANCELED}
RUN_ACTOR = "dagster"
_NAMESPACE = uuid.UUID("0f6f4f8e-0c9c-4a36-8f7e-5d1d6a0b2f41")
_SUMMARY_LIMIT = 1000


@dataclass(frozen=True)
class RunInfo:
    """What Leviathan records of a Dagster run (no Dagster types past this point)."""

    run_id: str
    job_name: str
    status: str  # queued | started | succeeded | failed | canceled | other
    partition: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    failure_reason: str | None = None


def run_event_id(run_id: str, event_type: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{run_id}/{event_type}"))


def events_for_run(run: RunInfo) -> list[Event]:
    """The events a run has earned so far: ``run.started`` once it started, then its ending."""
    common = {"run_id": run.run_id, "job": run.job_name, "partition": run.partition, "tags": dict(run.tags)}
    events = []
    if run.started_at is not None:
        events.append(
            _event(
                RUN_STARTED, run, {**common, "started_at": format_timestamp(run.started_at)}, run.started_at
            )
        )
    kind = TERMINAL.get(run.status)
    if kind is not None:
        ended = run.ended_at or run.started_at
        payload = {**common, "status": run.status, "ended_at": format_timestamp(ended) if ended else None}
        if kind == RUN_FAILED:
            payload["failure_reason"] = (run.failure_reason or "")[:_SUMMARY_LIMIT]
        events.append(_event(kind, run, payload, ended))
    return events


def record_runs(store: EventStore, runs: Iterable[RunInfo], *, known: Container[str] = ()) -> int:
    """Append the runs' events not in the log yet; returns how many were written. Safe to repeat.

    The first record of a fact wins: a run's ``run.started`` recomputed later (a tag added since)
    is not a conflict worth failing a sensor for, so known ids are skipped rather than re-sent.
    ``known``: event ids already in the log (a log view's index), skipped without asking the store.
    """
    unique: dict[str, Event] = {}
    for run in runs:
        for event in events_for_run(run):
            if event.event_id not in known:
                unique.setdefault(event.event_id, event)
    for _ in range(2):  # a concurrent writer may record some of them between the check and the append
        new = [e for e in unique.values() if store.get(e.event_id) is None]
        if not new:
            return 0
        try:
            store.append(new)
            return len(new)
        except ConflictError:
            continue
    raise ConflictError("run events kept conflicting with concurrent writers; try again")


def _event(kind: str, run: RunInfo, payload: dict, at: datetime | None) -> Event:
    return Event.new(kind, payload, actor_id=RUN_ACTOR, event_id=run_event_id(run.run_id, kind), at=at)
