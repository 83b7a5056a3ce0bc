"""The hash-chained event log: Leviathan's audit trail and the source of its attempt records."""

from leviathan_dagster.core.events.model import Event, StoredEvent, VerifyReport
from leviathan_dagster.core.events.store import EventStore

__all__ = ["Event", "EventStore", "StoredEvent", "VerifyReport"]
