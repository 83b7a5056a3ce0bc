"""The NDJSON event_id index from a snapshot (core/events/ndjson/id_snapshots.py): a new process's
first append checks duplicates without parsing the history, and still finds every old event_id."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from leviathan_dagster.core.errors import ConflictError
from leviathan_dagster.core.events.model import Event
from leviathan_dagster.core.events.ndjson import store as ndjson
from leviathan_dagster.core.events.ndjson.index import EventIdIndex
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.history import history_events  # noqa: E402


@pytest.fixture(autouse=True)
def small_thresholds(monkeypatch):
    monkeypatch.setattr(ndjson, "INDEX_SNAPSHOT_EVERY", 100)
    monkeypatch.setattr(ndjson, "INDEX_SNAPSHOT_MIN_BYTES", 0)


def parsed_lines(monkeypatch) -> list[int]:
    """Counts every line the index parses (what a snapshot saves)."""
    calls: list[int] = []
    original = EventIdIndex._add_line

    def counting(self, raw):
        calls.append(1)
        return original(self, raw)

    monkeypatch.setattr(EventIdIndex, "_add_line", counting)
    return calls


def test_a_new_process_checks_duplicates_from_the_snapshot_and_finds_old_ids(tmp_path, monkeypatch) -> None:
    path = tmp_path / "events.ndjson"
    events = list(history_events(450, targets=("a",)))
    writer = NdjsonEventLog(path)
    for start in range(0, 400, 50):  # each append indexes what it has not seen: snapshots every 100
        writer.append(events[start : start + 50])
    [key, *_] = writer.projection_shelf().keys("event_ids")
    assert key.seq >= 300

    calls = parsed_lines(monkeypatch)
    fresh = NdjsonEventLog(path)
    old = events[10]
    [again] = fresh.append([old])  # a retried bundle from long ago: found, not written twice
    assert again.seq == 11 and fresh.head()[0] == 400
    assert len(calls) <= 400 - key.seq  # only the lines after the snapshot were parsed
    with pytest.raises(ConflictError):
        fresh.append([replace(old, payload={**old.payload, "changed": True})])
    fresh.append(events[400:])
    assert fresh.get(events[3].event_id).seq == 4 and fresh.head()[0] == len(events)


def test_an_index_snapshot_of_another_file_is_ignored(tmp_path, monkeypatch, caplog) -> None:
    path = tmp_path / "events.ndjson"
    events = list(history_events(300, targets=("a",)))
    writer = NdjsonEventLog(path, log_id="one")
    for start in range(0, 300, 50):
        writer.append(events[start : start + 50])
    assert writer.projection_shelf().keys("event_ids")
    path.unlink()  # the same identity, other events: no snapshot line matches
    other = NdjsonEventLog(path, log_id="one")
    other.append(list(history_events(300, targets=("a",), seed=5)))
    with caplog.at_level(logging.WARNING):
        fresh = NdjsonEventLog(path, log_id="one")
        [stored] = fresh.append([Event.new("note", {"n": 1}, actor_id="t", event_id=events[5].event_id)])
    assert stored.seq == other.head()[0]  # written: the old file's id is not in this one
    assert any("ignoring event_id index snapshot" in r.getMessage() for r in caplog.records)


def test_a_worker_index_started_after_a_seq_is_never_snapshotted(tmp_path) -> None:
    path = tmp_path / "events.ndjson"
    NdjsonEventLog(path).append(list(history_events(50, targets=("a",))))
    worker = NdjsonEventLog(path)
    worker.expect_new_ids_after(50)
    mine = list(history_events(300, targets=("b",), seed=3))
    worker.append(mine[:200])
    worker.append(mine[200:])  # 250 lines indexed past its start: a whole index would snapshot here
    assert worker.projection_shelf().keys("event_ids") == []  # it knows only its own ids
    whole = NdjsonEventLog(path)
    whole.append([Event.new("note", {}, actor_id="t")])
    assert whole.projection_shelf().keys("event_ids")
