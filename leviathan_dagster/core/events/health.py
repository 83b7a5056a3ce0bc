"""Is the event log intact? The hash chain re-checked, and the log checked against the newest signed
checkpoint when there is one (which also catches truncation and a re-hashed rewrite)."""

from __future__ import annotations

from dataclasses import dataclass, field

from leviathan_dagster.core.errors import LeviathanError
from leviathan_dagster.core.events.proofs import (
    LATEST_FILE,
    checkpoints_dir,
    load_verifier,
    verify_against_checkpoint,
)
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.home import LeviathanHome


@dataclass(frozen=True)
class EventLogHealth:
    ok: bool
    summary: str
    details: dict[str, object] = field(default_factory=dict)


def check_event_log(store: EventStore, home: LeviathanHome) -> EventLogHealth:
    report = store.verify()
    details: dict[str, object] = {"events": report.events, "head_hash": report.head_hash}
    if not report.ok:
        details |= {"first_bad_seq": report.first_bad_seq, "damage": report.kind or ""}
        return EventLogHealth(
            False, f"chain broken at seq {report.first_bad_seq} ({report.kind}): {report.reason}", details
        )
    latest = checkpoints_dir(home) / LATEST_FILE
    if not latest.exists():
        return EventLogHealth(True, f"chain of {report.events} events verifies (no checkpoint yet)", details)
    try:
        verifier = load_verifier(home)
        text = latest.read_text(encoding="utf-8")
    except (LeviathanError, OSError) as exc:
        return EventLogHealth(False, f"cannot check {latest}: {exc}", details)
    checked = verify_against_checkpoint(store, text, verifier)
    details |= {"checkpoint_size": checked.checkpoint_size, "checkpoint_finding": checked.finding}
    if not checked.ok:
        return EventLogHealth(
            False, f"checkpoint check failed ({checked.finding}): {checked.detail}", details
        )
    return EventLogHealth(True, f"chain verifies; {checked.detail}", details)
