"""What an operator needs to act on one attempt, beyond its ledger record: touched paths, diff stat,
duration, token totals and generator. Read from the attempt's terminal event and its sealed ``diff.patch``.

Nothing secret and no prompt text: only paths, counts and what the worker already recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from leviathan_dagster.core.events import model as ev
from leviathan_dagster.core.events.model import StoredEvent
from leviathan_dagster.core.events.schemas import fold_anomaly
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.projections.log_view import LogView, view_of
from leviathan_dagster.core.projections.metrics import usage_tokens


def terminal_payload(events: Iterable[StoredEvent], attempt_id: str) -> dict:
    """The payload of the attempt's first terminal event (the one the ledger keeps), or {}."""
    for stored in events:
        if fold_anomaly(stored) is not None:
            continue  # malformed: the ledger skipped it too, so it is not "the one the ledger keeps"
        ended = stored.event_type in (ev.ATTEMPT_SUCCEEDED, ev.ATTEMPT_FAILED)
        if ended and stored.payload.get("attempt_id") == attempt_id:
            return stored.payload
    return {}


def terminal_payload_in(view: LogView, attempt_id: str) -> dict:
    """:func:`terminal_payload`, found through the view's attempt index instead of a scan."""
    with view.lock:
        view.require("index")
        view.refresh()
        seq = view.index.terminal_seq.get(attempt_id)
    stored = view.event_at(seq) if seq is not None else None
    return stored.payload if stored is not None else {}


def diff_stat(patch: str) -> dict[str, int]:
    """``git diff --stat`` totals from a unified diff: files, insertions, deletions."""
    files = insertions = deletions = 0
    for line in patch.splitlines():
        if line.startswith("diff --git "):
            files += 1
        elif line.startswith("+") and not line.startswith("+++"):
            insertions += 1
        elif line.startswith("-") and not line.startswith("---"):
            deletions += 1
    return {"files": files, "insertions": insertions, "deletions": deletions}


def attempt_details(
    events: Iterable[StoredEvent] | EventStore, home: LeviathanHome, attempt_id: str
) -> dict[str, object]:
    """Details of ``attempt_id``; ``events`` is the log (looked up through this process's incremental
    view: one seek to the attempt's terminal event) or any iterable of its events (scanned)."""
    if isinstance(events, EventStore):
        payload = terminal_payload_in(view_of(events), attempt_id)
    else:
        payload = terminal_payload(events, attempt_id)
    details: dict[str, object] = {}
    if payload.get("touched_paths"):
        details["touched_paths"] = list(payload["touched_paths"])
    if isinstance(payload.get("duration_seconds"), int | float):
        details["worker_duration_seconds"] = payload["duration_seconds"]
    tokens = usage_tokens(payload)
    if tokens is not None:
        details["tokens"] = tokens
    if isinstance(payload.get("generator"), str):
        details["generator"] = payload["generator"]
    patch = Path(home.artifacts_dir(attempt_id)) / "diff.patch"
    if patch.is_file():
        stat = diff_stat(patch.read_text(encoding="utf-8", errors="replace"))
        details["diff_stat"] = f"{stat['files']} files, +{stat['insertions']} -{stat['deletions']}"
    return details
