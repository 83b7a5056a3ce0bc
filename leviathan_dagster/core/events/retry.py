"""Appends that survive a database restart or a busy lock: bounded retries with backoff, safe because
every append is idempotent by event_id.

A :class:`TransientError` from a store (connection killed, server restarting, head lock timed out, a
failed disk write) may or may not have written the bundle; retrying the same bundle is always right:
events already in the log come back as stored, the rest are appended once. Anything else (a conflict,
an invalid event) is raised at once: it would fail the same way again.

A plain loop, no retry library: every worker appends through here, and importing one cost more than
the usual single try. The waits are exponential: ``first_wait``, doubled after each try, at most
``max_wait``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from leviathan_dagster.core.errors import TransientError
from leviathan_dagster.core.events.model import Event, StoredEvent
from leviathan_dagster.core.events.store import EventStore

APPEND_ATTEMPTS = 8
FIRST_WAIT_SECONDS = 0.25
MAX_WAIT_SECONDS = 8.0  # 0.25, 0.5, 1, 2, 4, 8, 8: about 24 s in all, longer than a PostgreSQL restart

logger = logging.getLogger(__name__)
T = TypeVar("T")


def retry_transient(
    call: Callable[[], T],
    action: str,
    *,
    attempts: int = APPEND_ATTEMPTS,
    first_wait: float = FIRST_WAIT_SECONDS,
    max_wait: float = MAX_WAIT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """``call()``, tried up to ``attempts`` times while it raises :class:`TransientError`."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except TransientError as error:
            if attempt >= attempts:
                raise
            logger.warning(
                "event log %s failed (try %d of %s), retrying: %s", action, attempt, attempts, error
            )
            if before_retry is not None:
                before_retry()
            sleep(min(first_wait * 2 ** (attempt - 1), max_wait))
    raise AssertionError("unreachable: the last try returns or raises")


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
        """``store.append(events)``, retried; the last :class:`TransientError` if every try failed."""
        events = list(events)
        return retry_transient(
            lambda: self.store.append(events),
            "append",
            attempts=self._attempts,
            first_wait=self._first_wait,
            max_wait=self._max_wait,
            sleep=self._sleep,
            before_retry=self._forget_store,
        )

    def _forget_store(self) -> None:
        if self._opener is not None:
            self._store = None  # the next try opens the log afresh


def append_with_retry(store: EventStore, events: Sequence[Event], **options: object) -> list[StoredEvent]:
    """One retried append to ``store`` (see :class:`RetryingAppender`)."""
    return RetryingAppender(store, **options).append(events)  # type: ignore[arg-type]


def read_with_retry(read: Callable[[], T], *, sleep: Callable[[float], None] = time.sleep) -> T:
    """``read()`` (a fold of the log, a head lookup), retried on :class:`TransientError` like an append.

    For the orchestrator's reads between two appends it must make: after its worker ended, what the
    worker recorded decides what is recorded next, and a restart of the database at that moment must
    not fail the run with the attempt left in flight. A read changes nothing, so it is always safe to
    repeat; each try opens a connection of its own (see PostgresEventLog.read).
    """
    return retry_transient(read, "read", sleep=sleep)
