"""One incremental view of the event log per process: fold once, then only what was appended.

Every reader of Leviathan's state (the scheduling sensor, the run-time re-check, the PR lifecycle,
delivery metrics, the control plane, the CLI) used to re-read and re-fold the whole log, several times
per tick; at a million events that is minutes. A :class:`LogView` keeps each projection it has been
asked for (attempt ledger, graph, delivery metrics, costs, attempt index) together with the last seq it
folded, and ``refresh`` reads only ``store.read(after_seq=...)``: the NDJSON backend seeks to that seq by
bisection and PostgreSQL by its primary key, so a refresh costs what was appended, not the history.

``view_of(store)`` returns the process's view of a log (keyed by backend and identity), so a long-lived
process (the Dagster code server that evaluates sensors, the control plane) folds the history once.

Projections are folded only once asked for: a run process that needs the ledger never pays for the
graph. A projection added later folds from seq 0 by itself, in the same pass as the others' increment.

Thread safety: ``refresh`` and every projection read happen under ``lock`` (re-entrant, so a caller
may hold it across a refresh, an append and another refresh); callers that read a projection while
another thread may refresh hold the lock or use :meth:`current`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from leviathan_dagster.core.attempts import AttemptLedger
from leviathan_dagster.core.costs import CostFold
from leviathan_dagster.core.events import model as ev
from leviathan_dagster.core.events.model import StoredEvent
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.graph import GraphProjection
from leviathan_dagster.core.metrics import DeliveryFold

RECENT_EVENTS = 10
# Views kept per process (least recently used first out): one per log in production; tests open many.
_MAX_VIEWS = 16


class Projection(Protocol):
    last_seq: int

    def apply(self, events: Any) -> Any: ...


class AttemptIndex:
    """Where each attempt's events are (seqs only, the events stay in the store) and the last few
    events of each target: what the control plane and attempt details look up."""

    def __init__(self) -> None:
        self.last_seq = 0
        self.attempt_seqs: dict[str, list[int]] = {}
        # attempt id -> seq of its first terminal event (the one the ledger keeps).
        self.terminal_seq: dict[str, int] = {}
        self.recent: dict[str, deque[dict[str, Any]]] = {}
        # Ids of the run.* events (one per Dagster run and status): what the run-events sensor skips.
        self.run_event_ids: set[str] = set()

    def apply(self, events: Any) -> None:
        for stored in events:
            self._apply_one(stored)
            self.last_seq = stored.seq

    def _apply_one(self, stored: StoredEvent) -> None:
        payload = stored.payload
        if stored.event_type.startswith("run."):
            self.run_event_ids.add(stored.event.event_id)
        attempt_id = payload.get("attempt_id")
        if isinstance(attempt_id, str) and attempt_id:
            self.attempt_seqs.setdefault(attempt_id, []).append(stored.seq)
            if stored.event_type in (ev.ATTEMPT_SUCCEEDED, ev.ATTEMPT_FAILED):
                self.terminal_seq.setdefault(attempt_id, stored.seq)
        target_id = payload.get("target_id")
        if isinstance(target_id, str) and target_id:
            recent = self.recent.setdefault(target_id, deque(maxlen=RECENT_EVENTS))
            recent.append(
                {
                    "seq": stored.seq,
                    "event_id": stored.event.event_id,
                    "event_type": stored.event_type,
                    "timestamp": stored.event.timestamp,
                }
            )


_FACTORIES = {
    "ledger": AttemptLedger,
    "graph": GraphProjection,
    "metrics": DeliveryFold,
    "costs": CostFold,
    "index": AttemptIndex,
}


class LogView:
    """Incremental projections of one event store (see the module docstring)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.lock = threading.RLock()
        self.last_seq = 0
        self._projections: dict[str, Projection] = {}

    # -- projections -----------------------------------------------------------------------------

    @property
    def ledger(self) -> AttemptLedger:
        return self._projection("ledger")  # type: ignore[return-value]

    @property
    def graph(self) -> GraphProjection:
        return self._projection("graph")  # type: ignore[return-value]

    @property
    def metrics(self) -> DeliveryFold:
        return self._projection("metrics")  # type: ignore[return-value]

    @property
    def costs(self) -> CostFold:
        return self._projection("costs")  # type: ignore[return-value]

    @property
    def index(self) -> AttemptIndex:
        return self._projection("index")  # type: ignore[return-value]

    def require(self, *names: str) -> None:
        """Fold these projections from now on (all of them stand at one seq after the call)."""
        for name in names:
            self._projection(name)

    def _projection(self, name: str) -> Projection:
        with self.lock:
            projection = self._projections.get(name)
            if projection is None:
                projection = self._projections[name] = _FACTORIES[name]()
                if self.last_seq:
                    # Folded from seq 0 in one pass with the others' increment: all stay at one seq.
                    self._catch_up(self._projections)
            return projection

    # -- keeping up ------------------------------------------------------------------------------

    def refresh(self) -> int:
        """Fold every event appended since the last refresh into every projection; the last seq."""
        with self.lock:
            head, _ = self.store.head()
            if head < self.last_seq:
                # The log behind this view was replaced (a new file at the same path, an import):
                # start over rather than show state the log no longer holds.
                self._projections = {name: _FACTORIES[name]() for name in self._projections}
                self.last_seq = 0
            if self._projections and head > min(p.last_seq for p in self._projections.values()):
                self._catch_up(self._projections)
            return self.last_seq

    @contextmanager
    def current(self) -> Iterator[LogView]:
        """The view refreshed, held under its lock for the block (a consistent state to decide on).
        Read projections inside the block, not before it: a refresh may replace them."""
        with self.lock:
            self.refresh()
            yield self

    def event_at(self, seq: int) -> StoredEvent | None:
        """The stored event with ``seq`` (one seek, not a scan)."""
        events = self.store.read(after_seq=seq - 1)
        try:
            stored = next(events, None)
        finally:
            _close(events)
        return stored if stored is not None and stored.seq == seq else None

    def _catch_up(self, projections: dict[str, Projection]) -> None:
        if not projections:
            return  # nothing asked for yet: the first projection asked for folds the log from seq 0
        start = min(p.last_seq for p in projections.values())
        events = self.store.read(after_seq=start)
        try:
            items = list(projections.values())
            for stored in events:
                for projection in items:
                    if stored.seq > projection.last_seq:
                        projection.apply((stored,))
                if stored.seq > self.last_seq:
                    self.last_seq = stored.seq
        finally:
            _close(events)


_views: OrderedDict[tuple[str, str], LogView] = OrderedDict()
_views_lock = threading.Lock()


def view_of(store: EventStore) -> LogView:
    """This process's view of ``store``'s log (the same one for every store object of that log)."""
    key = (type(store).__name__, repr(store))
    with _views_lock:
        view = _views.get(key)
        if view is None:
            view = _views[key] = LogView(store)
            while len(_views) > _MAX_VIEWS:
                _views.popitem(last=False)
        _views.move_to_end(key)
        return view


def current_ledger(store: EventStore) -> AttemptLedger:
    """The attempt ledger of ``store``'s log as of now (incremental: see :class:`LogView`)."""
    view = view_of(store)
    with view.lock:
        view.require("ledger")
        view.refresh()  # may start the projections over (a replaced log): read them after it
        return view.ledger


def _close(events: Iterator[StoredEvent]) -> None:
    # Reading often stops early: close the store's generator now so its file or cursor is released.
    close = getattr(events, "close", None)
    if close is not None:
        close()
