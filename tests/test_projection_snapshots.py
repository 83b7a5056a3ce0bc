"""Projection snapshots (core/projections/snapshots.py): a new process starts each projection from its
newest snapshot that still matches the log and folds only what follows; a snapshot that does not match
is ignored with a warning, never trusted; read-only stores never write one."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leviathan_dagster.core.events.model import Event
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.projections import snapshots
from leviathan_dagster.core.projections.log_view import CODECS, LogView
from leviathan_dagster.core.projections.snapshot_checks import check_snapshots
from leviathan_dagster.core.projections.snapshots import Codec, encode_state

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.history import history_events  # noqa: E402

ALL = tuple(CODECS)
REPO = Path(__file__).resolve().parents[1]


def state_bytes(view: LogView, name: str) -> bytes:
    return encode_state(CODECS[name].to_state(view._projection(name)))


def full_fold(store) -> LogView:
    view = LogView(store)
    view.shelf = None  # from seq 0, whatever is on the shelf
    view.require(*ALL)
    view.refresh()
    return view


def odd_events(target: str) -> list[Event]:
    """Events the history generator never writes: operator actions, circuits, malformed payloads."""
    ids = {"target_id": target, "task_id": "hist-2"}
    kinds = [
        ("target.paused", {"target_id": target, "reason": "maintenance"}),
        ("circuit.opened", {"target_id": target}),
        ("task.escalated", ids),
        ("operator.run_now", ids),
        ("task.escalation_cleared", ids),
        ("circuit.reset", {"target_id": target}),
        ("target.resumed", {"target_id": target}),
        ("attempt.failed", {"target_id": target}),  # no attempt_id: an anomaly, skipped by every fold
        ("pr.merged", {"target_id": target}),  # no pr_number: an anomaly
    ]
    return [Event.new(kind, payload, actor_id="operator") for kind, payload in kinds]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    count=st.integers(20, 300),
    cut=st.floats(0.05, 0.95),
    seed=st.integers(0, 10_000),
    close_ratio=st.sampled_from([0.0, 0.3, 0.8]),
    odd_at=st.floats(0, 1),
)
def test_a_snapshot_and_the_rest_of_the_log_give_exactly_a_full_fold(
    tmp_path_factory, count, cut, seed, close_ratio, odd_at
) -> None:
    path = tmp_path_factory.mktemp("log") / "events.ndjson"
    store = NdjsonEventLog(path)
    events = list(history_events(count, targets=("a", "b"), close_ratio=close_ratio, seed=seed))
    split = int(len(events) * odd_at)
    events[split:split] = odd_events("a")
    head = int(len(events) * cut)
    store.append(events[:head])
    writer = LogView(store)
    writer.require(*ALL)
    writer.refresh()
    # Read the metrics before the snapshot: what a read leaves behind in a fold must not matter.
    for _, day in list(writer.metrics._rows):
        writer.metrics.metrics_for(date.fromisoformat(day))
    assert {key.projection for key in writer.write_snapshots(every=1)} == set(ALL)
    store.append(events[head:])

    resumed = LogView(NdjsonEventLog(path))
    resumed.require(*ALL)
    assert resumed._snapshot_seq == dict.fromkeys(ALL, head)  # each started from its snapshot
    resumed.refresh()
    reference = full_fold(store)
    for name in ALL:
        assert state_bytes(resumed, name) == state_bytes(reference, name), name
    assert resumed.graph.to_json() == reference.graph.to_json()
    assert resumed.ledger.attempts() == reference.ledger.attempts()
    assert resumed.ledger.running() == reference.ledger.running()
    assert resumed.ledger.anomalies == reference.ledger.anomalies


def snapshotted_log(tmp_path: Path, count: int = 300, log_id: str | None = None) -> tuple[Path, list[Event]]:
    path = tmp_path / "events.ndjson"
    store = NdjsonEventLog(path, log_id=log_id)
    events = list(history_events(count, targets=("a",), close_ratio=0.3))
    store.append(events[: count // 2])
    view = LogView(store)
    view.require(*ALL)
    view.refresh()
    view.write_snapshots(every=1)
    store.append(events[count // 2 :])
    return path, events


def started_from(path: Path, name: str = "ledger") -> int:
    """The seq a new view's projection starts at (0: no snapshot was used)."""
    view = LogView(NdjsonEventLog(path))
    return view._projection(name).last_seq


def test_a_new_view_starts_from_the_snapshot_and_reads_only_after_it(tmp_path) -> None:
    path, _ = snapshotted_log(tmp_path)
    store = NdjsonEventLog(path)
    reads: list[int] = []
    original = store.read

    def recording_read(after_seq: int = 0):
        reads.append(after_seq)
        return original(after_seq)

    store.read = recording_read  # type: ignore[method-assign]
    view = LogView(store)
    view.require(*ALL)
    view.refresh()
    seq = view._snapshot_seq["ledger"]
    assert seq > 0 and 0 not in reads and min(reads) >= seq - 1
    assert state_bytes(view, "ledger") == state_bytes(full_fold(NdjsonEventLog(path)), "ledger")


def test_refresh_writes_a_snapshot_every_n_events_and_keeps_only_the_last_few(tmp_path) -> None:
    store = NdjsonEventLog(tmp_path / "events.ndjson")
    events = list(history_events(400, targets=("a",)))
    view = LogView(store)
    view.snapshot_every = 50
    view.require("ledger")
    for start in range(0, len(events), 30):
        store.append(events[start : start + 30])
        view.refresh()
    keys = store.projection_shelf().keys("ledger")
    assert len(keys) == snapshots.KEEP
    assert keys[0].seq >= store.head()[0] - 50 - 30
    assert all(earlier.seq - later.seq >= 50 for earlier, later in zip(keys, keys[1:], strict=False))
    assert not list((tmp_path / "events.ndjson.projections").glob(".*"))  # no temporary file left


def test_a_read_only_store_never_writes_a_snapshot(tmp_path) -> None:
    path = tmp_path / "events.ndjson"
    NdjsonEventLog(path).append(list(history_events(200, targets=("a",))))
    view = LogView(NdjsonEventLog(path, read_only=True))
    view.snapshot_every = 1
    view.require(*ALL)
    view.refresh()
    assert view.write_snapshots(every=1) == []
    assert not (tmp_path / "events.ndjson.projections").exists()


def test_a_truncated_log_makes_the_snapshot_unusable(tmp_path, caplog) -> None:
    path, events = snapshotted_log(tmp_path, log_id="one")
    path.unlink()
    NdjsonEventLog(path, log_id="one").append(events[:40])  # same identity, shorter: no event at seq
    with caplog.at_level(logging.WARNING):
        assert started_from(path) == 0
    [line] = [r.getMessage() for r in caplog.records if "ledger" in r.getMessage()]
    assert "ignoring projection snapshot" in line and "no event at seq" in line
    # Deleted: else it would outrank, and ``prune`` would delete, every new snapshot of this log.
    assert not list(Path(f"{path}.projections").glob("ledger-*"))


def test_a_rewritten_log_makes_the_snapshot_unusable(tmp_path, caplog) -> None:
    path, events = snapshotted_log(tmp_path, log_id="one")
    path.unlink()
    # The same log_id and as many events, but other ones: the chain hash at the snapshot's seq differs.
    NdjsonEventLog(path, log_id="one").append(list(history_events(300, targets=("a",), seed=99)))
    with caplog.at_level(logging.WARNING):
        assert started_from(path) == 0
    assert any("chain hash" in r.getMessage() for r in caplog.records)


def test_another_logs_snapshots_are_never_used(tmp_path, caplog) -> None:
    path, _ = snapshotted_log(tmp_path / "first")
    other = tmp_path / "second" / "events.ndjson"
    NdjsonEventLog(other).append(list(history_events(300, targets=("a",))))  # same events, other log_id
    os.rename(f"{path}.projections", f"{other}.projections")
    with caplog.at_level(logging.WARNING):
        assert started_from(other) == 0
    assert any("ignoring projection snapshot" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("damage", "kept"),
    [
        (lambda data: data[: len(data) // 2], False),  # torn
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), False),  # one bit of the body
        (lambda data: b"garbage", False),
        # Written by another version of the code (a rolling upgrade): not ours to delete.
        (lambda data: data.replace(b'"version":"1.', b'"version":"7.', 1), True),
    ],
    ids=["torn", "bit-flip", "garbage", "other-version"],
)
def test_a_damaged_snapshot_is_ignored_with_one_warning(tmp_path, caplog, damage, kept) -> None:
    path, _ = snapshotted_log(tmp_path)
    [snapshot] = Path(f"{path}.projections").glob("ledger-*.snapshot")
    snapshot.write_bytes(damage(snapshot.read_bytes()))
    with caplog.at_level(logging.WARNING):
        view = LogView(NdjsonEventLog(path, read_only=True))
        view.require("ledger")
        assert snapshot.exists()  # a read-only process deletes nothing
        view = LogView(NdjsonEventLog(path))
        view.require("ledger")
        view.refresh()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(str(snapshot) in line for line in warnings)
    assert view._snapshot_seq["ledger"] == 0
    assert state_bytes(view, "ledger") == state_bytes(full_fold(NdjsonEventLog(path)), "ledger")
    assert snapshot.exists() == kept  # useless forever: the writable process deleted it


def test_a_state_version_bump_ignores_the_old_snapshots(tmp_path, monkeypatch, caplog) -> None:
    path, _ = snapshotted_log(tmp_path)
    codec = CODECS["graph"]
    monkeypatch.setitem(CODECS, "graph", Codec(f"{codec.version}-changed", codec.to_state, codec.from_state))
    with caplog.at_level(logging.WARNING):
        assert started_from(path, "graph") == 0
        assert started_from(path, "ledger") > 0  # the other projections' snapshots still hold
    assert any("state version" in r.getMessage() for r in caplog.records)


def test_verify_finds_a_forged_snapshot_that_passes_every_load_check(tmp_path) -> None:
    path, _ = snapshotted_log(tmp_path)
    store = NdjsonEventLog(path)
    assert all(check.ok for check in check_snapshots(store))
    [key] = store.projection_shelf().keys("ledger")
    view = LogView(store)
    view.require("ledger")
    state = CODECS["ledger"].to_state(view.ledger)
    # Someone who can write the home marks a failed attempt succeeded and re-seals the file.
    forged = [row for row in state["attempts"] if row[4] == "failed"][0]
    forged[4] = "succeeded"
    store.projection_shelf().save(
        key, snapshots.encode_snapshot(key, CODECS["ledger"].version, store.log_id, state)
    )
    assert started_from(path) == key.seq  # the load checks cannot know
    bad = [check for check in check_snapshots(store) if not check.ok]
    assert [(c.key, c.problem) for c in bad] == [(key, "differs from the log refolded to its seq")]


def test_a_cold_process_uses_the_snapshot_the_last_one_wrote(tmp_path) -> None:
    """In a fresh interpreter, as the sensor's first tick and ``leviathan tasks`` start."""
    path, _ = snapshotted_log(tmp_path)
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
        from leviathan_dagster.core.projections.log_view import current_ledger, view_of
        store = NdjsonEventLog(Path({str(path)!r}))
        reads = []
        original = store.read
        store.read = lambda after_seq=0: (reads.append(after_seq), original(after_seq))[1]
        ledger = current_ledger(store)
        print(min(reads), view_of(store)._snapshot_seq["ledger"], len(ledger.attempts()))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    first_read, start, attempts = map(int, out.stdout.split())
    assert start > 0 and first_read >= start - 1
    assert attempts == len(full_fold(NdjsonEventLog(path)).ledger.attempts())


def test_events_checkpoint_snapshots_the_projections_and_verify_refolds_them(tmp_path) -> None:
    from click.testing import CliRunner
    from support import backlog_yaml, docs_task, make_project

    from leviathan_dagster.cli.main import cli

    project = make_project(
        tmp_path, {"site": {"files": {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"))}}}
    )
    store = project.events()
    store.append(list(history_events(120, targets=("site",), close_ratio=0.3)))

    def invoke(*args: str):
        base = ["--config", str(project.config_path), "--home", str(project.home.root)]
        return CliRunner().invoke(cli, [*base, *args], catch_exceptions=False)

    assert invoke("events", "checkpoint").exit_code == 0
    keys = {name: store.projection_shelf().keys(name) for name in ALL}
    assert all(found and found[0].seq == store.head()[0] for found in keys.values())
    verified = invoke("events", "verify")
    assert (
        verified.exit_code == 0
        and f"projection snapshots verified by refolding: {len(ALL)}" in verified.output
    )

    [key] = keys["graph"]
    state = CODECS["graph"].to_state(full_fold(store).graph)
    state["nodes"] = state["nodes"][:-1]  # a node removed, the file re-sealed
    store.projection_shelf().save(
        key, snapshots.encode_snapshot(key, CODECS["graph"].version, store.log_id, state)
    )
    forged = invoke("events", "verify", "--json")
    assert forged.exit_code == 1
    rows = json.loads(forged.stdout)["projection_snapshots"]
    assert [r["projection"] for r in rows if r["problem"]] == ["graph"]


SPY = """
import os
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.projections import log_view

_read, _start = NdjsonEventLog.read, log_view.LogView._start


def _note(line):
    with open(os.environ["SPY_FILE"], "a") as out:
        out.write(line + "\\n")


def read(self, after_seq=0):
    _note(f"read {after_seq}")
    return _read(self, after_seq)


def start(self, name):
    _note(f"projection {name}")
    return _start(self, name)


NdjsonEventLog.read, log_view.LogView._start = read, start
"""


def test_the_worker_never_reads_the_log_nor_its_snapshots(tmp_path) -> None:
    from support import backlog_yaml, docs_task, make_project, run_worker

    project = make_project(
        tmp_path, {"site": {"files": {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"))}}}
    )
    store = project.events()
    store.append(list(history_events(200, targets=("site",))))
    snapshot_projections_dir = Path(f"{store.path}.projections")
    spy_dir = tmp_path / "spy"
    spy_dir.mkdir()
    (spy_dir / "sitecustomize.py").write_text(SPY, encoding="utf-8")
    spy_file = tmp_path / "spy.txt"
    env = {"PYTHONPATH": f"{spy_dir}{os.pathsep}{REPO}", "SPY_FILE": str(spy_file)}
    proc = run_worker(
        project, "site", "a", "attempt-1", LEVIATHAN_EVENT_LOG_AFTER_SEQ=str(store.head()[0]), **env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not spy_file.exists()  # no read, no projection
    assert not snapshot_projections_dir.exists()
    # The spy does see a process that reads (so its silence above means something).
    reader = "import sys\nfrom leviathan_dagster.core.events.ndjson.store import NdjsonEventLog as L\n"
    reader += "list(L(sys.argv[1]).read())"
    subprocess.run([sys.executable, "-c", reader, str(store.path)], env={**os.environ, **env}, check=True)
    assert spy_file.read_text() == "read 0\n"


def test_the_control_plane_starts_from_the_snapshots(tmp_path) -> None:
    from starlette.testclient import TestClient

    from leviathan_dagster.control_plane import create_app

    path, _ = snapshotted_log(tmp_path)
    store = NdjsonEventLog(path)
    reads: list[int] = []
    original = store.read
    store.read = lambda after_seq=0: (reads.append(after_seq), original(after_seq))[1]  # type: ignore[method-assign]
    app = create_app(store, token="t")
    with TestClient(app) as client:
        answer = client.get("/v1/graph/summary", headers={"Authorization": "Bearer t"})
    assert answer.status_code == 200
    started = app.state.view.view._snapshot_seq
    assert set(started) >= {"graph", "ledger", "index"} and min(started.values()) > 0
    assert 0 not in reads
    assert answer.json()["last_seq"] == store.head()[0]
    assert answer.json() == full_fold(NdjsonEventLog(path)).graph.summary()
