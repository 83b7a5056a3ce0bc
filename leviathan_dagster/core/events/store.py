"""The one interface every event-log backend implements (NDJSON embedded, PostgreSQL for production)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from leviathan_dagster.core.errors import ConflictError
from leviathan_dagster.core.events.chain import InvalidEvent, canonical_event_bytes
from leviathan_dagster.core.events.model import Event, StoredEvent, VerifyReport

if TYPE_CHECKING:
    from leviathan_dagster.core.events.ndjson.tail import TornTail
    from leviathan_dagster.core.projections.snapshots import SnapshotShelf


class EventStore(ABC):
    """An append-only, hash-chained log of events.

    ``append`` is durable before it returns and atomic per call: either every new event of the call is
    in the chain or none is. Several processes may append at once; the chain never forks.

    Appends are idempotent by ``event_id``: an event already in the log with the same canonical bytes
    is not written again and comes back as it was stored (original seq and hashes); the same
    ``event_id`` with other content raises :class:`ConflictError` and nothing of that call is written.
    This holds across restarts, so a producer may simply retry a bundle whose outcome it does not know.
    """

    @abstractmethod
    def append(self, events: Sequence[Event]) -> list[StoredEvent]:
        """Append the events not yet in the log, in order; returns every event of the call, in the
        call's order, with its seq and hashes. Raises :class:`InvalidEvent` (nothing written) for an
        event canonical JSON cannot hold or an ``event_id`` given twice in the call, and
        :class:`ConflictError` (nothing written) for an ``event_id`` stored with other content."""

    @abstractmethod
    def read(self, after_seq: int = 0) -> Iterator[StoredEvent]:
        """Events with ``seq > after_seq``, in order."""

    @abstractmethod
    def get(self, event_id: str) -> StoredEvent | None:
        """The stored event with this ``event_id``, or None."""

    @abstractmethod
    def head(self) -> tuple[int, str]:
        """(last seq, last hash); (0, genesis hash) for an empty log."""

    @abstractmethod
    def verify(self, *, full: bool = True) -> VerifyReport:
        """Re-check the whole chain; the report names the first bad seq and the kind of damage.

        ``full`` parses every stored event, re-canonicalises it and compares the bytes before hashing;
        ``full=False`` hashes the stored canonical bytes only (much faster; it still finds any changed
        byte, but not a writer that stored non-canonical bytes in the first place)."""

    def expect_new_ids_after(self, seq: int) -> None:  # noqa: B027 - a hint; most backends need none
        """A promise from this instance's producer: none of the event ids it will append can be in the
        log at or below ``seq`` (a worker's ids derive from its attempt, created at ``seq``). A backend
        whose duplicate check would otherwise read the whole log (NDJSON, in a fresh process) then reads
        only what follows ``seq``; an id reused at or below it would go unnoticed, so only pass what
        the ids guarantee."""

    def append_one(self, event: Event) -> StoredEvent:
        return self.append([event])[0]

    def projection_shelf(self) -> SnapshotShelf | None:
        """Where this log's projection snapshots are kept (see ``core/projections/snapshots``), or
        None: a backend without one refolds from seq 0 in every new process."""
        return None

    def torn_tail(self) -> TornTail | None:
        """Bytes after the last complete record that only the next append may repair (NDJSON only;
        a transactional backend has none). Readers report it; reading never changes it."""
        return None


def canonical_bundle(events: Sequence[Event]) -> list[bytes]:
    """The canonical bytes of each event of one append, checked before a backend touches storage.

    An ``event_id`` twice in one call is refused: whichever copy "won" would silently decide what the
    log holds, and for two different contents there is no right answer.
    """
    bodies = [canonical_event_bytes(event) for event in events]
    seen: set[str] = set()
    for event in events:
        if event.event_id in seen:
            raise InvalidEvent(f"event_id {event.event_id!r} appears more than once in one append")
        seen.add(event.event_id)
    return bodies


def check_same_content(stored: StoredEvent, body: bytes) -> StoredEvent:
    """``stored`` if it holds exactly ``body``; else the :class:`ConflictError` of a reused event_id."""
    if stored.body != body:
        raise ConflictError(
            f"event_id {stored.event.event_id!r} is already in the log at seq {stored.seq} with other "
            "content; an event_id names one event forever (give the new event a new id)"
        )
    return stored
