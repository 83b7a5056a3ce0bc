"""Appends that survive a database restart or a busy lock: bounded retries with backoff, safe because
every append is idempotent by event_id.

A :class:`TransientError` from a store (connection killed, server restarting, head lock timed out, a
failed disk write) may or may not have written the bundle; retrying the same bundle is always right:
events already in the log come back as stored, the rest are appended once. Anything else (a conflict,
an invalid event) is raised at once: it would fail the same way again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from leviathan_dagster.core.errors import TransientError
from leviathan_dagster.core.events.model import Event, StoredEvent
from leviathan_dagster.core.events.store import EventStore

APPEND_ATTEMPTS = 8
FIRST_WAIT_SECONDS = 0.25
MAX_WAIT_SECONDS = 8.0  # 0.25, 0.5, 1, 2, 4, 8, 8: about 24 s in all, longer than a PostgreSQL restart

logger = logging.getLogger(__name__)


class RetryingAppender:
    """Appends to a store, retrying transient failures; reopens the store before each retry when given
    an ``opener`` (an NDJSON log refuses further appends after a failed write, by design, until it is
    opened again and re-reads the file under its lock)."""

    def __init__(
        self,
        store: EventStore | None = None,
        *,
        opener: Callable[[], EventStore] | None = None,
        attempts: int = APPEND_ATTEMPTS,
        first_wait: float = FIRST_WAIT_SECONDS,
        max_wait: float = MAX_WAIT_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if store is None and opener is None:
            raise ValueError("RetryingAppender needs a store or an opener")
        self._store, self._opener = store, opener
        self._attempts, self._first_wait, self._max_wait = attempts, first_wait, max_wait
        self._sleep = sleep

    @property
    def store(self) -> EventStore:
        if self._store is None:
            assert self._opener is not None
            self._store = self._opener()
        return self._store

    def append(self, events: Sequence[Event]) -> list[StoredEvent]:
        """``store.append(events)``, retried; the last :class:`TransientError` if every try failed.

        A plain loop, no retry library: every worker appends through here, and importing one cost more
        than the usual single try (the waits are tenacity's ``wait_exponential``: first_wait doubled
        after each try, at most max_wait)."""
        events = list(events)
        for attempt in range(1, self._attempts + 1):
            try:
                return self.store.append(events)
            except TransientError as error:
                if attempt >= self._attempts:
                    raise
                logger.warning(
                    "event log append failed (try %d of %s), retrying: %s", attempt, APPEND_ATTEMPTS, error
                )
                if self._opener is not None:
                    self._store = None  # the next try opens the log afresh
                self._sleep(min(self._first_wait * 2 ** (attempt - 1), self._max_wait))
        raise AssertionError("unreachable: the last try returns or raises")


def append_with_retry(store: EventStore, events: Sequence[Event], **options: object) -> list[StoredEvent]:
    """One retried append to ``store`` (see :class:`RetryingAppender`)."""
    return RetryingAppender(store, **options).append(events)  # type: ignore[arg-type]
