"""Incremental projections (core/projections/log_view.py) and the reads they stand on: a view folds
the log once, then only what was appended, and always agrees with a full fold."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import pytest

from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.events import model as ev
from leviathan_dagster.core.events.model import Event
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.projections.graph import GraphProjection
from leviathan_dagster.core.projections.log_view import LogView, current_ledger, view_of
from leviathan_dagster.core.projections.metrics import compute_delivery_metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.history import append_history, history_events  # noqa: E402


def ledger_state(ledger: AttemptLedger) -> tuple:
    return (
        sorted((a.attempt_id, a.status, a.failure_type, a.pr_number) for a in ledger.attempts()),
        sorted(ledger.finished_prs),
        sorted((t, ledger.target(t).consecutive_failures) for t in ("a", "b")),
    )


def test_ndjson_reads_after_a_seq_without_reading_the_lines_before(tmp_path, monkeypatch) -> None:
    store = NdjsonEventLog(tmp_path / "events.ndjson")
    last = append_history(store, 300, targets=("a", "b"))
    everything = [s.seq for s in store.read()]
    assert everything == list(range(1, last + 1))

    # The scan from byte 0 is no longer used for a read that starts after a seq.
    def no_scan(self, end):
        raise AssertionError("read scanned the log from byte 0")

    monkeypatch.setattr(NdjsonEventLog, "_lines", no_scan)
    for after in (1, 2, 57, last // 2, last - 1):
        assert [s.seq for s in store.read(after_seq=after)] == list(range(after + 1, last + 1))
    assert list(store.read(after_seq=last)) == []
    assert list(store.read(after_seq=last + 10)) == []


def test_a_read_after_a_seq_still_reports_a_damaged_line(tmp_path) -> None:
    path = tmp_path / "events.ndjson"
    store = NdjsonEventLog(path)
    append_history(store, 40)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[30] = lines[30].replace(b'"seq":31,', b'"seq":99,')
    path.write_bytes(b"".join(lines))
    with pytest.raises(Exception, match="31"):
        list(NdjsonEventLog(path).read(after_seq=20))


def test_the_view_folds_only_what_was_appended_and_agrees_with_a_full_fold(tmp_path) -> None:
    path = tmp_path / "events.ndjson"
    store = NdjsonEventLog(path)
    events = list(history_events(900, targets=("a", "b"), close_ratio=0.3))
    store.append(events[:400])
    view = view_of(store)
    assert view_of(NdjsonEventLog(path)) is view  # one view per log in a process, whatever the object
    view.require("ledger", "graph", "metrics", "index")
    assert view.refresh() == 400

    reads: list[int] = []
    original = store.read

    def counting_read(after_seq: int = 0):
        reads.append(after_seq)
        return original(after_seq)

    view.store.read = counting_read  # type: ignore[method-assign]
    store.append(events[400:])
    assert view.refresh() == len(events)
    assert reads == [400]  # one read, from where the view stood

    full = list(NdjsonEventLog(path).read())
    assert ledger_state(view.ledger) == ledger_state(AttemptLedger.from_events(full))
    assert view.graph.to_json() == GraphProjection.from_events(full).to_json()
    day = date.fromisoformat(full[-1].event.timestamp[:10])
    assert view.metrics.metrics_for(day) == compute_delivery_metrics(full, day)
    assert view.index.terminal_seq  # every ended attempt's terminal event is indexed


def test_a_projection_asked_for_late_folds_the_whole_log(tmp_path) -> None:
    store = NdjsonEventLog(tmp_path / "events.ndjson")
    append_history(store, 200)
    view = LogView(store)
    view.require("ledger")
    view.refresh()
    graph = view.graph  # first asked for now: it starts at seq 0, and ends where the ledger is
    assert graph.last_seq == view.ledger.last_seq == store.head()[0]
    assert graph.to_json() == GraphProjection.from_events(store.read()).to_json()


def test_a_replaced_log_is_refolded_not_shown_stale(tmp_path) -> None:
    path = tmp_path / "events.ndjson"
    store = NdjsonEventLog(path, log_id="one")
    append_history(store, 100)
    view = LogView(store)
    assert current_ledger(store).attempts()
    view.require("ledger")
    view.refresh()
    path.write_bytes(b"")  # same log identity, emptied behind the view's back
    view.refresh()
    assert view.ledger.attempts() == []


def test_closing_a_pr_folds_without_scanning_every_attempt(monkeypatch) -> None:
    events = [
        ev_stored(i + 1, e) for i, e in enumerate(history_events(3000, targets=("a",), close_ratio=0.5))
    ]
    closes = sum(1 for e in events if e.event_type == ev.PR_CLOSED)
    assert closes > 50

    def scan(self, target_id=None):
        raise AssertionError("a PR close scanned every attempt of the target")

    monkeypatch.setattr(AttemptLedger, "attempts", scan)
    ledger = AttemptLedger.from_events(events)
    monkeypatch.undo()
    closed = [a for a in ledger.attempts("a") if a.failure_type == "pr_closed"]
    assert len(closed) == closes
    assert all(ledger.attempts_with_pr("a", a.pr_number) == [a] for a in closed)
    assert ledger.open_pr_attempts("a") == []


def ev_stored(seq: int, event: Event):
    from leviathan_dagster.core.events.model import StoredEvent

    return StoredEvent(seq, event, "0" * 64, "0" * 64, b"")


def test_a_worker_checks_duplicates_only_after_its_attempt_was_created(tmp_path) -> None:
    path = tmp_path / "events.ndjson"
    append_history(NdjsonEventLog(path), 500)
    created_seq = NdjsonEventLog(path).head()[0]
    mine = Event.new("attempt.started", {"attempt_id": "x"}, actor_id="worker", event_id="worker-x-1")
    NdjsonEventLog(path).append([mine])

    worker_log = NdjsonEventLog(path)
    worker_log.expect_new_ids_after(created_seq)
    again = worker_log.append([mine])  # a retried bundle: found, not written twice
    assert again[0].seq == created_seq + 1
    assert worker_log._index.lines == created_seq + 1  # it indexed only its own line
    assert NdjsonEventLog(path).head()[0] == created_seq + 1


def test_the_orchestrator_tells_the_worker_where_its_events_begin(tmp_path) -> None:
    from leviathan_dagster.core.executors.base import AttemptSpec
    from leviathan_dagster.core.home import LeviathanHome
    from leviathan_dagster.core.models import TargetConfig
    from worker.environment import WorkerEnv

    target = TargetConfig(id="site", repo_url="file:///repos/site.git")
    spec = AttemptSpec(target, "intro", "attempt-1", 1, tmp_path / "l.yaml", LeviathanHome(tmp_path), 41)
    env = spec.worker_environment()
    assert env["LEVIATHAN_EVENT_LOG_AFTER_SEQ"] == "41"
    assert WorkerEnv.from_environ(env).log_after_seq == 41
    with pytest.raises(Exception, match="LEVIATHAN_EVENT_LOG_AFTER_SEQ"):
        WorkerEnv.from_environ({**env, "LEVIATHAN_EVENT_LOG_AFTER_SEQ": "x"})
