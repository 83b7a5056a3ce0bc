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

A new process does not fold from seq 0 either: a projection first asked for starts from its newest
snapshot that still matches the log (``snapshots``: checked against the chain hash at its seq), and the
view writes a new snapshot of each projection it holds once it has folded ``SNAPSHOT_EVERY`` events past
the last one, so a cold start refolds at most about that many events, whatever the history.

Thread safety: ``refresh`` and every projection read happen under ``lock`` (re-entrant, so a caller
may hold it across a refresh, an append and another refresh); callers that read a projection while
another thread may refresh hold the lock or use :meth:`current`.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from leviathan_dagster.core import failures
from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.events import model as ev
from leviathan_dagster.core.events import schemas
from leviathan_dagster.core.events.model import StoredEvent
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.projections import snapshots
from leviathan_dagster.core.projections.costs import CostFold
from leviathan_dagster.core.projections.graph import GraphProjection
from leviathan_dagster.core.projections.metrics import DeliveryFold
from leviathan_dagster.core.projections.snapshots import SNAPSHOT_EVERY, Codec, SnapshotKey, close_reader

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

    STATE_VERSION = 1

    def to_state(self) -> dict[str, Any]:
        return {
            "last_seq": self.last_seq,
            "attempt_seqs": [[attempt_id, seqs] for attempt_id, seqs in self.attempt_seqs.items()],
            "terminal_seq": [[attempt_id, seq] for attempt_id, seq in self.terminal_seq.items()],
            "recent": [[target_id, list(events)] for target_id, events in self.recent.items()],
            "run_event_ids": sorted(self.run_event_ids),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AttemptIndex:
        index = cls()
        index.last_seq = state["last_seq"]
        index.attempt_seqs = {attempt_id: list(seqs) for attempt_id, seqs in state["attempt_seqs"]}
        index.terminal_seq = {attempt_id: seq for attempt_id, seq in state["terminal_seq"]}
        index.recent = {t: deque(events, maxlen=RECENT_EVENTS) for t, events in state["recent"]}
        index.run_event_ids = set(state["run_event_ids"])
        return index


_FACTORIES = {
    "ledger": AttemptLedger,
    "graph": GraphProjection,
    "metrics": DeliveryFold,
    "costs": CostFold,
    "index": AttemptIndex,
}


def _fold_version(factory: type) -> str:
    """The projection's STATE_VERSION and a fingerprint of the code that folds it (its module and
    the modules its fold consults): a snapshot written by other fold code, even one that changed
    without a version bump, is never used, so an upgrade costs one refold, never a stale state."""
    digest = hashlib.sha256()
    for module in (sys.modules[factory.__module__], failures, ev, schemas, sys.modules[__name__]):
        digest.update(Path(module.__file__ or "").read_bytes())
    return f"{factory.STATE_VERSION}.{digest.hexdigest()[:16]}"


# How each projection is snapshotted; one without an entry always folds from seq 0.
CODECS = {
    name: Codec(_fold_version(factory), factory.to_state, factory.from_state)
    for name, factory in _FACTORIES.items()
}


class LogView:
    """Incremental projections of one event store (see the module docstring)."""

    # Events folded past a projection's last snapshot before ``refresh`` writes the next one.
    snapshot_every = SNAPSHOT_EVERY

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.lock = threading.RLock()
        self.last_seq = 0
        self._projections: dict[str, Projection] = {}
        self.shelf = store.projection_shelf()
        self.log_id: str | None = getattr(store, "log_id", None)
        # Per projection, the seq of the snapshot it started from or last wrote (0: none).
        self._snapshot_seq: dict[str, int] = {}

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
                projection = self._projections[name] = self._start(name)
                if self.last_seq and len(self._projections) > 1:
                    # Folded from its snapshot (or seq 0) in one pass with the others' increment: all
                    # stay at one seq.
                    self._catch_up(self._projections)
                self.last_seq = max(self.last_seq, projection.last_seq)
            return projection

    def _start(self, name: str) -> Projection:
        """A projection from its newest snapshot that matches the log, else empty (seq 0)."""
        codec = CODECS.get(name)
        if codec is not None and self.shelf is not None and self.log_id:
            loaded = snapshots.load_newest(self.store, self.shelf, name, codec, self.log_id)
            if loaded is not None:
                self._snapshot_seq[name] = loaded.last_seq
                return loaded
        self._snapshot_seq[name] = 0
        return _FACTORIES[name]()

    # -- snapshots -------------------------------------------------------------------------------

    def write_snapshots(self, *, every: int | None = None) -> list[SnapshotKey]:
        """Snapshot each projection that has folded at least ``every`` events since its last snapshot
        (``every=1``: each one not snapshotted at its current seq). Nothing on a read-only store."""
        every = self.snapshot_every if every is None else every
        with self.lock:
            if self.shelf is None or not self.shelf.writable or not self.log_id or not self.last_seq:
                return []
            due = [
                name
                for name, projection in self._projections.items()
                if name in CODECS and projection.last_seq - self._snapshot_seq.get(name, 0) >= every
            ]
            stored = snapshots.event_at(self.store, self.last_seq) if due else None
            written = []
            for name in due:
                projection = self._projections[name]
                if stored is None or projection.last_seq != stored.seq:
                    continue
                key = SnapshotKey(name, stored.seq, stored.hash)
                if snapshots.save(self.shelf, key, CODECS[name], self.log_id, projection):
                    written.append(key)
                # Also after a failed write: the next try is SNAPSHOT_EVERY events on, not every tick.
                self._snapshot_seq[name] = stored.seq
            return written

    # -- keeping up ------------------------------------------------------------------------------

    def refresh(self) -> int:
        """Fold every event appended since the last refresh into every projection; the last seq."""
        with self.lock:
            head, _ = self.store.head()
            if head < self.last_seq:
                # The log behind this view was replaced (a new file at the same path, an import):
                # start over rather than show state the log no longer holds.
                self._projections = {name: _FACTORIES[name]() for name in self._projections}
                self._snapshot_seq = dict.fromkeys(self._projections, 0)
                self.last_seq = 0
            if self._projections and head > min(p.last_seq for p in self._projections.values()):
                self._catch_up(self._projections)
                # Here, after a fold, so a process that folded many events leaves them folded for the
                # next one; at most one write per projection every SNAPSHOT_EVERY events.
                self.write_snapshots()
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
        return snapshots.event_at(self.store, seq)

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
            close_reader(events)


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


def snapshot_projections(store: EventStore) -> int:
    """Every projection of ``store``'s log folded to its head and snapshotted there (what ``events
    checkpoint`` leaves beside each checkpoint); the seq they stand at. Nothing for a read-only store."""
    view = view_of(store)
    with view.lock:
        view.require(*CODECS)
        view.refresh()  # writes the snapshots itself when it folded many events
        view.write_snapshots(every=1)
        return view.last_seq


def current_ledger(store: EventStore) -> AttemptLedger:
    """The attempt ledger of ``store``'s log as of now (incremental: see :class:`LogView`)."""
    view = view_of(store)
    with view.lock:
        view.require("ledger")
        view.refresh()  # may start the projections over (a replaced log): read them after it
        return view.ledger
