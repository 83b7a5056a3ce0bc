"""NdjsonEventLog: the shared contract, plus what only a file can suffer (torn tails, edited bytes,
spliced files, a failing disk) and the multi-process lock, tested with real processes."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import pytest
from event_log_contract import EventStoreContract, make_event

from leviathan_dagster.core.errors import (
    ConfigError,
    ConflictError,
    EventLogCorrupted,
    NotFoundError,
    TransientError,
)
from leviathan_dagster.core.events.chain import (
    InvalidEvent,
    canonical_event_bytes,
    chain_hash,
    genesis_hash,
)
from leviathan_dagster.core.events.model import Event
from leviathan_dagster.core.events.ndjson.lines import encode_line, parse_line
from leviathan_dagster.core.events.ndjson.store import FORMAT, NdjsonEventLog


def log_path(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "events.ndjson"


class UnlockedLog(NdjsonEventLog):
    """The race the lock prevents, made likely: no lock, and a pause between reading the head and writing."""

    def _locked(self):  # type: ignore[no-untyped-def]
        return nullcontext()

    def _read_tail(self, fd: int) -> tuple[int, str, int]:
        tail = super()._read_tail(fd)
        time.sleep(0.002)
        return tail


def open_writer(spec: dict, unlocked: bool) -> NdjsonEventLog:
    """The contract's writer processes open the log through this."""
    return (UnlockedLog if unlocked else NdjsonEventLog)(Path(spec["path"]))


class TestNdjsonEventLog(EventStoreContract):
    writer_opener = "test_event_log_ndjson:open_writer"

    def make_store(self, tmp_path: Path) -> NdjsonEventLog:
        return NdjsonEventLog(log_path(tmp_path))

    def writer_spec(self, tmp_path: Path) -> dict:
        return {"path": str(log_path(tmp_path))}

    def tamper(self, store: NdjsonEventLog, seq: int) -> None:
        lines = store.path.read_bytes().splitlines(keepends=True)
        lines[seq - 1] = lines[seq - 1].replace(b'"payload":{', b'"payload":{"tampered":true,', 1)
        store.path.write_bytes(b"".join(lines))


@pytest.fixture
def five(tmp_path: Path) -> NdjsonEventLog:
    store = NdjsonEventLog(log_path(tmp_path))
    # 1e16 is written "1e+16" and \x1f as "\u001f": bytes whose case can change without changing the value.
    store.append([make_event(i, note="é\x1f", big=1e16) for i in range(1, 3)])
    store.append([make_event(i) for i in range(3, 6)])
    return store


def lines_of(store: NdjsonEventLog) -> list[bytes]:
    return store.path.read_bytes().splitlines(keepends=True)


# -- the file format ---------------------------------------------------------------------------------


def test_lines_and_metadata_have_the_documented_shape(five: NdjsonEventLog) -> None:
    line = lines_of(five)[0]
    first = json.loads(line)
    assert list(first) == ["seq", "prev_hash", "hash", "event"]
    assert first["seq"] == 1 and first["prev_hash"] == genesis_hash(five.log_id)
    stored = next(five.read())
    # The canonical event bytes sit in the line verbatim, between the fixed-width frame and the "}".
    assert line == b'{"seq":1,"prev_hash":"%s","hash":"%s","event":%s}\n' % (
        stored.prev_hash.encode(),
        stored.hash.encode(),
        canonical_event_bytes(stored.event),
    )
    assert FORMAT == "leviathan-ndjson/v2"
    assert json.loads(five.meta_path.read_text()) == {"format": FORMAT, "log_id": five.log_id}


def test_a_v1_log_is_refused_with_the_format_named(five: NdjsonEventLog) -> None:
    five.meta_path.write_text(json.dumps({"format": "leviathan-ndjson/v1", "log_id": five.log_id}))
    with pytest.raises(ConfigError, match="'leviathan-ndjson/v1' is not supported"):
        NdjsonEventLog(five.path)


def test_log_id_is_kept_and_checked(tmp_path: Path) -> None:
    path = log_path(tmp_path)
    NdjsonEventLog(path, log_id="orders").append_one(make_event(1))
    assert NdjsonEventLog(path).log_id == "orders"
    assert NdjsonEventLog(path, log_id="orders").verify().ok
    with pytest.raises(ConfigError, match="another log"):
        NdjsonEventLog(path, log_id="payments")


def test_events_without_metadata_are_refused(five: NdjsonEventLog) -> None:
    five.meta_path.unlink()
    with pytest.raises(ConfigError, match="no events.ndjson.meta.json"):
        NdjsonEventLog(five.path)
    assert NdjsonEventLog(five.path, log_id=five.log_id).verify().ok


def test_events_of_type_filters(tmp_path: Path) -> None:
    store = NdjsonEventLog(log_path(tmp_path))
    store.append([Event.new(kind, {}, actor_id="t") for kind in ("a", "b", "a", "c")])
    assert [item.seq for item in store.events_of_type({"a", "c"})] == [1, 3, 4]


# -- tampering: every byte, and whole lines ----------------------------------------------------------


@pytest.mark.parametrize("full", [True, False], ids=["full", "hash-only"])
def test_any_changed_byte_is_found_at_the_seq_of_its_line(five: NdjsonEventLog, full: bool) -> None:
    original = five.path.read_bytes()
    line_of_byte = [seq for seq, line in enumerate(lines_of(five), start=1) for _ in line]
    checked = 0
    for position, byte in enumerate(original):
        # Flip the low bit, flip case (hex digits 'a' -> 'A'), and break the line structure with b"\n".
        for replacement in {byte ^ 0x01, byte ^ 0x20, ord("\n")} - {byte}:
            five.path.write_bytes(original[:position] + bytes([replacement]) + original[position + 1 :])
            report = five.verify(full=full)
            assert not report.ok, (position, replacement)
            assert report.first_bad_seq == line_of_byte[position], (position, replacement, report.reason)
            checked += 1
    assert checked > 3 * len(original) - len(original) // 10


def test_deleted_line(five: NdjsonEventLog) -> None:
    lines = lines_of(five)
    five.path.write_bytes(b"".join(lines[:2] + lines[3:]))
    report = five.verify()
    assert (report.first_bad_seq, report.events, report.kind) == (3, 2, "deleted")
    assert "seq 3..3 deleted" in report.reason


def test_swapped_lines(five: NdjsonEventLog) -> None:
    lines = lines_of(five)
    five.path.write_bytes(b"".join([lines[0], lines[2], lines[1], *lines[3:]]))
    report = five.verify()
    assert report.first_bad_seq == 2 and report.kind == "reordered" and "reordered" in report.reason


def test_inserted_copy_of_a_line(five: NdjsonEventLog) -> None:
    lines = lines_of(five)
    five.path.write_bytes(b"".join([*lines[:4], lines[1], lines[4]]))
    report = five.verify()
    assert report.first_bad_seq == 5 and report.kind == "inserted"
    assert "seq 2 again at record 5: record inserted" in report.reason


def test_line_with_rewritten_links_is_found(five: NdjsonEventLog) -> None:
    # A forger who renumbers and re-hashes one event still breaks the link to the next line.
    lines = lines_of(five)
    third = parse_line(lines[2])
    body = canonical_event_bytes(replace(third.event, payload={"forged": True}))
    lines[2] = encode_line(3, third.prev_hash, chain_hash(third.prev_hash, 3, body), body)
    five.path.write_bytes(b"".join(lines))
    for full in (True, False):
        report = five.verify(full=full)
        assert report.first_bad_seq == 4 and "not the hash of seq 3" in report.reason


def test_truncated_last_line(five: NdjsonEventLog) -> None:
    original = five.path.read_bytes()
    last = len(lines_of(five)[-1])
    for cut in (1, 10, last - 1):
        five.path.write_bytes(original[:-cut])
        report = five.verify()
        # Only the newline gone: seq 5 is whole and still counts, but the tail is reported all the same.
        complete = cut == 1
        assert (report.ok, report.first_bad_seq, report.events, report.kind) == (
            False,
            5,
            4 + complete,
            "torn",
        )
        assert report.byte_range == (len(original) - last, len(original) - cut)
        assert report.reason.startswith("torn tail: bytes ")
        assert ("complete and chained" in report.reason) == complete
        assert five.path.read_bytes() == original[:-cut]  # verify never writes
    # A whole last line removed leaves a shorter, valid chain: only a head recorded elsewhere shows it.
    five.path.write_bytes(b"".join(original.splitlines(keepends=True)[:4]))
    assert five.verify().ok and five.verify().events == 4


def test_log_spliced_from_another_log_has_a_bad_genesis(tmp_path: Path) -> None:
    ours = NdjsonEventLog(tmp_path / "ours.ndjson")
    theirs = NdjsonEventLog(tmp_path / "theirs.ndjson")
    theirs.append([make_event(1), make_event(2)])
    ours.path.write_bytes(theirs.path.read_bytes())
    report = ours.verify()
    assert report.first_bad_seq == 1 and report.reason.startswith("bad genesis")
    with pytest.raises(EventLogCorrupted) as caught:
        ours.verify_or_raise()
    assert caught.value.seq == 1


# -- torn tails and failed writes --------------------------------------------------------------------


def test_readers_never_change_a_torn_tail(five: NdjsonEventLog, caplog: pytest.LogCaptureFixture) -> None:
    acknowledged = list(five.read())
    with five.path.open("ab") as handle:  # a crash in the middle of an append's write
        handle.write(b'{"seq":6,"event_id":"half-writ')
    damaged = five.path.read_bytes()
    caplog.set_level(logging.WARNING, logger="leviathan_dagster.core.events.ndjson.store")
    reader = NdjsonEventLog(five.path, read_only=True)
    for store in (five, reader, NdjsonEventLog(five.path)):
        assert list(store.read()) == acknowledged
        assert store.head() == (5, acknowledged[-1].hash)
        report = store.verify()
        assert (report.ok, report.kind, report.byte_range) == (
            False,
            "torn",
            (len(damaged) - 30, len(damaged)),
        )
        assert store.torn_tail().complete is None
    assert "torn tail: bytes" in caplog.text
    assert five.path.read_bytes() == damaged


def test_removing_the_last_newline_of_an_acknowledged_event_loses_nothing(five: NdjsonEventLog) -> None:
    # The repro: an acknowledged attempt.succeeded whose final newline was removed was cut by
    # the next reader, and verify then reported success.
    succeeded = five.append_one(make_event(6, kind="attempt.succeeded"))
    five.path.write_bytes(five.path.read_bytes()[:-1])
    reader = NdjsonEventLog(five.path, read_only=True)
    assert [e.seq for e in reader.read()][-1] == 6 and reader.head() == (6, succeeded.hash)
    assert reader.get(succeeded.event.event_id) == succeeded
    report = reader.verify()
    assert (report.ok, report.kind, report.events) == (False, "torn", 6)
    # The appender keeps the event and adds the newline; nothing is quarantined.
    assert five.append_one(make_event(7)).prev_hash == succeeded.hash
    assert five.verify().ok and five.verify().events == 7
    assert not list(five.path.parent.glob("*.quarantine-*"))


def test_the_appender_quarantines_a_fragment_and_records_it(five: NdjsonEventLog) -> None:
    acknowledged = five.head()
    fragment = b'{"seq":6,"event_id":"half-writ'
    with five.path.open("ab") as handle:
        handle.write(fragment)
    offset = five.path.stat().st_size - len(fragment)
    stored = five.append([make_event(6)])
    # The caller's event comes after the record of the repair, which chains onto the last good event.
    assert stored[0].seq == 7
    record = five.get(stored[0].event.event_id)
    assert record is not None and record.seq == 7
    repair = list(five.read(after_seq=5))[0]
    assert repair.event_type == "log.tail_quarantined" and repair.prev_hash == acknowledged[1]
    quarantine = five.path.parent / repair.payload["quarantine_file"]
    assert quarantine.read_bytes() == fragment
    assert repair.payload == {
        "quarantine_file": quarantine.name,
        "offset": offset,
        "length": len(fragment),
        "sha256": hashlib.sha256(fragment).hexdigest(),
    }
    assert five.verify().ok and five.verify().events == 7
    assert fragment not in five.path.read_bytes()


def test_every_cut_of_the_last_bundle_is_repaired_by_the_next_append(five: NdjsonEventLog) -> None:
    # A crash can leave any prefix of the last bundle's single write on disk. Opening the log changes
    # nothing; the next append keeps every complete line (and a last line missing only its newline),
    # quarantines a partial one, and chains on: nothing acknowledged is lost, the log verifies.
    acknowledged = five.path.read_bytes()
    bundle = [make_event(i, text="torn ☃") for i in range(6, 10)]
    five.append(bundle)
    full = five.path.read_bytes()
    bundle_lines = full[len(acknowledged) :].splitlines(keepends=True)
    ends = [len(acknowledged) + sum(map(len, bundle_lines[:n])) for n in range(len(bundle_lines) + 1)]
    for cut in range(len(acknowledged), len(full)):
        for old in five.path.parent.glob("*.quarantine-*"):
            old.unlink()
        five.path.write_bytes(full[:cut])
        reopened = NdjsonEventLog(five.path)
        assert reopened.path.read_bytes() == full[:cut], cut  # opening is reading: no change
        complete = sum(1 for end in ends[1:] if cut >= end - 1)  # a line missing only "\n" is whole
        fragment = cut not in ends and cut + 1 not in ends
        stored = reopened.append(bundle)
        assert [item.seq for item in stored][complete:] == list(range(6 + complete + fragment, 10 + fragment))
        report = reopened.verify(full=False)
        assert report.ok and report.events == 9 + fragment
        assert len(list(five.path.parent.glob("*.quarantine-*"))) == fragment


def test_torn_first_line_is_quarantined_by_the_first_append(tmp_path: Path) -> None:
    store = NdjsonEventLog(log_path(tmp_path))
    store.path.write_bytes(b'{"seq":1,')
    assert store.head() == (0, store.genesis)
    assert store.append_one(make_event(1)).seq == 2
    assert store.verify().ok


def test_read_only_open_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no event log at"):
        NdjsonEventLog(log_path(tmp_path), read_only=True)
    assert not (tmp_path / "logs").exists()
    store = NdjsonEventLog(log_path(tmp_path))
    store.append_one(make_event(1))
    store.lock_path.unlink()
    reader = NdjsonEventLog(store.path, read_only=True)
    assert reader.verify().ok and not store.lock_path.exists()
    with pytest.raises(TransientError, match="read-only"):
        reader.append_one(make_event(2))


def test_garbage_last_line_stops_appends(five: NdjsonEventLog) -> None:
    with five.path.open("ab") as handle:
        handle.write(b"not json\n")
    size = five.path.stat().st_size
    with pytest.raises(EventLogCorrupted) as caught:
        five.append_one(make_event(7))
    assert caught.value.seq == 6
    assert five.path.stat().st_size == size
    with pytest.raises(EventLogCorrupted, match="line 6 unparseable"):
        list(five.read())


def test_failed_fsync_raises_and_poisons_the_writer(
    five: NdjsonEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = five.head()

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(TransientError, match=r"events\.ndjson.*Input/output error"):
            five.append_one(make_event(6))
    with pytest.raises(TransientError, match="stopped after a failed write"):
        five.append_one(make_event(6))  # the disk works again, but this writer no longer trusts it
    fresh = NdjsonEventLog(five.path)
    assert fresh.head() == head  # the unacknowledged line was cut back off
    assert fresh.append_one(make_event(6)).seq == 6
    assert fresh.verify().ok


def test_short_write_is_undone(five: NdjsonEventLog, monkeypatch: pytest.MonkeyPatch) -> None:
    size = five.path.stat().st_size
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[: len(data) // 2]))
    with pytest.raises(TransientError, match="short write"):
        five.append([make_event(6), make_event(7)])
    monkeypatch.undo()
    assert five.path.stat().st_size == size
    assert NdjsonEventLog(five.path).verify().ok


# -- canonical bytes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, 2**53 + 1, -(2**53) - 1, {1: "x"}, (1,), b"x", {1}, "\ud800", object()],
    ids=[
        "nan",
        "inf",
        "-inf",
        "2^53+1",
        "-2^53-1",
        "int-key",
        "tuple",
        "bytes",
        "set",
        "surrogate",
        "object",
    ],
)
def test_values_canonical_json_cannot_hold_are_rejected(value: object) -> None:
    with pytest.raises(InvalidEvent):
        canonical_event_bytes(Event.new("t", {"v": value}, actor_id="a"))


def test_non_string_fields_are_rejected() -> None:
    with pytest.raises(InvalidEvent, match="event_type"):
        canonical_event_bytes(Event("id", 7, "2024-01-01T00:00:00.000000Z", "a", {}))  # type: ignore[arg-type]


def test_canonical_bytes_sort_keys_and_keep_unicode() -> None:
    common = {"event_id": "e", "event_type": "t", "timestamp": "2024-01-01T00:00:00.000000Z", "actor_id": "a"}
    one = Event(**common, payload={"b": 1.0, "a": "é☃", "c": {"y": None, "x": [True]}})
    two = Event(**common, payload={"c": {"x": [True], "y": None}, "a": "é☃", "b": 1})
    expected = (
        '{"actor_id":"a","event_id":"e","event_type":"t",'
        '"payload":{"a":"é☃","b":1,"c":{"x":[true],"y":null}},"timestamp":"2024-01-01T00:00:00.000000Z"}'
    ).encode()
    assert canonical_event_bytes(one) == canonical_event_bytes(two) == expected


def test_genesis_and_chain_hash_formulas() -> None:
    import hashlib

    assert genesis_hash("x") == hashlib.sha256(b"leviathan-event-log/v1\x00x").hexdigest()
    assert genesis_hash("x") != genesis_hash("y")
    prev = genesis_hash("x")
    inner = hashlib.sha256(b"{}").digest()
    assert (
        chain_hash(prev, 1, b"{}")
        == hashlib.sha256(bytes.fromhex(prev) + b"\0" * 7 + b"\1" + inner).hexdigest()
    )


def test_a_refused_append_still_records_the_repair_it_made(five: NdjsonEventLog) -> None:
    first = next(iter(five.read())).event
    with five.path.open("ab") as handle:
        handle.write(b"garbage without a newline")
    with pytest.raises(ConflictError):
        five.append([replace(first, payload={"other": True})])
    assert [e.event_type for e in five.read()][-1] == "log.tail_quarantined"
    assert five.verify().ok


def test_an_unreadable_last_line_stops_the_appender_before_it_repairs_anything(five: NdjsonEventLog) -> None:
    with five.path.open("ab") as handle:
        handle.write(b"not json\ntorn")
    damaged = five.path.read_bytes()
    with pytest.raises(EventLogCorrupted):
        five.append_one(make_event(7))
    assert five.path.read_bytes() == damaged and not list(five.path.parent.glob("*.quarantine-*"))
