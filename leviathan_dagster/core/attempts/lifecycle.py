"""Builders for the attempt lifecycle events, so every producer writes the seed's payloads the same way.

Event ids are derived from the attempt id and event type (uuid5): a producer that retries after a crash
writes the same id again, which the ledger (and later the log itself) treats as a replay.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from leviathan_dagster.core.events import model as ev
from leviathan_dagster.core.events.model import Event, format_timestamp, utc_now

_NAMESPACE = uuid.UUID("6b1f2a52-5d0e-4c36-9d8e-1e5c0b7a9c11")


def _event_id(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)))


def _event(kind: str, payload: dict[str, Any], actor: str, key: tuple, at: datetime | None) -> Event:
    return Event.new(kind, payload, actor_id=actor, event_id=_event_id(kind, *key), at=at)


def attempt_created(
    *,
    target_id: str,
    task_id: str,
    attempt_id: str,
    attempt_number: int,
    branch_name: str,
    executor: str,
    actor_id: str,
    run_id: str | None = None,
    at: datetime | None = None,
) -> Event:
    moment = at or utc_now()
    payload = {
        "attempt_id": attempt_id,
        "node_id": attempt_id,
        "node_type": "Attempt",
        "task_id": task_id,
        "target_id": target_id,
        "attempt_number": attempt_number,
        "status": "created",
        "created_at": format_timestamp(moment),
        "branch_name": branch_name,
        "executor": executor,
        "run_id": run_id,
    }
    return _event(ev.ATTEMPT_CREATED, payload, actor_id, (attempt_id,), moment)


def attempt_started(*, attempt_id: str, target_id: str, task_id: str, actor_id: str) -> Event:
    moment = utc_now()
    payload = {
        "attempt_id": attempt_id,
        "target_id": target_id,
        "task_id": task_id,
        "status": "running",
        "started_at": format_timestamp(moment),
    }
    return _event(ev.ATTEMPT_STARTED, payload, actor_id, (attempt_id,), moment)


def attempt_succeeded(
    *, attempt_id: str, target_id: str, task_id: str, actor_id: str, **details: Any
) -> Event:
    return _attempt_ended(
        ev.ATTEMPT_SUCCEEDED, "succeeded", attempt_id, target_id, task_id, actor_id, details
    )


def attempt_failed(
    *,
    attempt_id: str,
    target_id: str,
    task_id: str,
    failure_type: str,
    error_summary: str,
    actor_id: str,
    **details: Any,
) -> Event:
    details = {"failure_type": failure_type, "error_summary": error_summary, **details}
    return _attempt_ended(ev.ATTEMPT_FAILED, "failed", attempt_id, target_id, task_id, actor_id, details)


def _attempt_ended(
    kind: str, status: str, attempt_id: str, target_id: str, task_id: str, actor_id: str, details: dict
) -> Event:
    moment = utc_now()
    payload = {
        "attempt_id": attempt_id,
        "target_id": target_id,
        "task_id": task_id,
        "status": status,
        "completed_at": format_timestamp(moment),
        **details,
    }
    return _event(kind, payload, actor_id, (attempt_id,), moment)


def pr_created(
    *,
    attempt_id: str,
    target_id: str,
    task_id: str,
    pr_number: int,
    pr_url: str,
    branch_name: str,
    actor_id: str,
) -> Event:
    payload = {
        "attempt_id": attempt_id,
        "target_id": target_id,
        "task_id": task_id,
        "pr_number": pr_number,
        "pr_url": pr_url,
        "branch_name": branch_name,
    }
    return _event(ev.PR_CREATED, payload, actor_id, (target_id, pr_number), None)


def pr_finished(
    *,
    kind: str,
    target_id: str,
    pr_number: int,
    task_ref: str | None,
    actor_id: str,
    at: datetime | None = None,
    **extra: Any,
) -> Event:
    """``pr.merged`` or ``pr.closed``; ``task_ref`` is ``<target>/<task>`` from the PR's marker.
    ``at`` (the forge's merge/close time) makes a re-recorded event identical, hence a no-op."""
    payload = {"target_id": target_id, "pr_number": pr_number, "task": task_ref, **extra}
    return _event(kind, payload, actor_id, (target_id, pr_number), at)


def retry_scheduled(
    *,
    target_id: str,
    task_id: str,
    retry_number: int,
    backoff_seconds: int,
    scheduled_at: datetime,
    actor_id: str,
) -> Event:
    """``scheduled_at`` is when the retry may start: the failure's end plus ``backoff_seconds``."""
    payload = {
        "task_id": task_id,
        "target_id": target_id,
        "retry_number": retry_number,
        "backoff_seconds": backoff_seconds,
        "scheduled_at": format_timestamp(scheduled_at),
    }
    return _event(ev.RETRY_SCHEDULED, payload, actor_id, (target_id, task_id, retry_number), None)


def task_completed(
    *, target_id: str, task_id: str, status: str, actor_id: str, at: datetime | None = None, **extra: Any
) -> Event:
    """``status`` is ``completed`` (its PR merged) or ``failed`` (attempts exhausted)."""
    payload = {"target_id": target_id, "task_id": task_id, "status": status, **extra}
    return _event(ev.TASK_COMPLETED, payload, actor_id, (target_id, task_id, status), at)


def task_escalated(*, target_id: str, task_id: str, failures: int, actor_id: str) -> Event:
    payload = {"target_id": target_id, "task_id": task_id, "failures": failures}
    return _event(ev.TASK_ESCALATED, payload, actor_id, (target_id, task_id), None)


def circuit_opened(*, target_id: str, consecutive_failures: int, threshold: int, actor_id: str) -> Event:
    payload = {"target_id": target_id, "consecutive_failures": consecutive_failures, "threshold": threshold}
    # A random id: the circuit may open again after a reset; the caller emits it once per opening
    # (it checks the ledger's ``circuit_opened`` first).
    return Event.new(ev.CIRCUIT_OPENED, payload, actor_id=actor_id)
