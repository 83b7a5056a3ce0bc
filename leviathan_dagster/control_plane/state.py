"""What the control plane reads: the graph, the attempt ledger and recent events, kept current by
folding only the events appended since the last read (``core/projections/log_view``)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from itertools import islice
from typing import Any

from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.events.model import StoredEvent
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.projections.graph import PULL_REQUEST, GraphProjection
from leviathan_dagster.core.projections.log_view import RECENT_EVENTS, view_of

TargetsStatus = Callable[[], Mapping[str, Mapping[str, Any]]]
"""Per-target facts the log cannot know (policy from the project config), by target id. A
``circuit_breaker_failures`` entry is the threshold at which the circuit counts as open."""


class LogView:
    """The control plane's reads, over this process's incremental view of the store (core's
    :class:`~leviathan_dagster.core.projections.log_view.LogView`). Thread-safe: handlers call it from
    a thread pool, and every read holds the view's lock."""

    def __init__(self, store: EventStore, targets_status: TargetsStatus | None = None) -> None:
        self.store = store
        self.targets_status = targets_status
        self.view = view_of(store)
        self._lock = self.view.lock

    @property
    def graph(self) -> GraphProjection:
        return self.view.graph

    @property
    def ledger(self) -> AttemptLedger:
        return self.view.ledger

    @property
    def _recent(self) -> dict[str, deque[dict[str, Any]]]:
        return self.view.index.recent

    def refresh(self) -> int:
        """Fold every event appended since the last refresh; returns the last seq folded."""
        with self._lock:
            self.view.require("graph", "ledger", "index")
            return self.view.refresh()

    def summary(self) -> dict[str, Any]:
        self.refresh()
        with self._lock:
            return self.graph.summary()

    def attempt(self, attempt_id: str) -> dict[str, Any] | None:
        """The attempt's ledger record with its events, or None if the log never mentioned it."""
        self.refresh()
        with self._lock:
            record = self.ledger.attempt(attempt_id)
            seqs = list(self.view.index.attempt_seqs.get(attempt_id, ()))
        if record is None and not seqs:
            return None
        events = []
        if seqs:
            # One pass from the attempt's first event: attempts are usually recent, so this reads little.
            wanted = set(seqs)
            with _reading(self.store, seqs[0] - 1) as stream:
                for stored in islice(stream, seqs[-1] - seqs[0] + 1):
                    if stored.seq in wanted:
                        events.append(stored.to_dict())
        return {
            "attempt_id": attempt_id,
            "record": asdict(record) if record is not None else None,
            "events": events,
        }

    def autonomy_status(self) -> dict[str, Any]:
        """Per target: circuit state, open PRs, running attempts and the last events."""
        last_seq = self.refresh()
        extra = dict(self.targets_status()) if self.targets_status is not None else {}
        with self._lock:
            open_prs: dict[str, list[dict[str, Any]]] = {}
            for pr in self.graph.nodes_of_type(PULL_REQUEST):
                if pr["state"] == "open":
                    open_prs.setdefault(pr["target_id"], []).append(_pr_view(pr))
            target_ids = sorted(set(self._recent) | set(extra) | set(open_prs))
            targets = {t: self._target_status(t, open_prs.get(t, []), extra.get(t)) for t in target_ids}
        return {"last_seq": last_seq, "targets": targets}

    def _target_status(
        self, target_id: str, open_prs: list[dict[str, Any]], extra: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        history = self.ledger.target(target_id)
        threshold = (extra or {}).get("circuit_breaker_failures")
        tripped = isinstance(threshold, int) and history.consecutive_failures >= threshold
        running = sorted(self.ledger.running(target_id), key=lambda a: a.attempt_id)
        return {
            "circuit": {
                "state": "open" if history.circuit_opened or tripped else "closed",
                "consecutive_failures": history.consecutive_failures,
                "threshold": threshold,
            },
            "open_prs": open_prs,
            "running_attempts": [
                {"attempt_id": a.attempt_id, "task_id": a.task_id, "status": a.status, "number": a.number}
                for a in running
            ],
            "last_attempt_at": history.last_attempt_at,
            "last_events": list(reversed(self._recent.get(target_id, ()))),
            # Malformed events of this target already in the log: skipped by every reader, shown here.
            "anomalies": [asdict(a) for a in self.ledger.anomalies if a.target_id == target_id][
                -RECENT_EVENTS:
            ],
            "config": dict(extra) if extra is not None else None,
        }


def read_page(store: EventStore, after: int, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` events with ``seq > after``, as dicts."""
    with _reading(store, after) as events:
        return [stored.to_dict() for stored in islice(events, limit)]


def _pr_view(node: dict[str, Any]) -> dict[str, Any]:
    keys = ("number", "pr_url", "task_id", "attempt_id", "branch_name", "created_at")
    return {key: node.get(key) for key in keys}


@contextmanager
def _reading(store: EventStore, after: int) -> Iterator[Iterator[StoredEvent]]:
    # Reading often stops early (a page, one attempt's range): close the store's generator at once so
    # its open file is released now rather than whenever the garbage collector gets to it.
    events = store.read(after_seq=after)
    try:
        yield events
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
