"""``events export|import``: NDJSON → PostgreSQL → NDJSON byte for byte, and nothing written for a bad export.

The PostgreSQL half runs against the real server through the temporary-database fixture of
``test_event_log_postgres`` (never skipped: a missing server fails with what to start).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import test_event_log_postgres
from click.testing import CliRunner
from test_event_log_postgres import prefix_for

from leviathan_dagster.cli.main import cli
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.events import transfer
from leviathan_dagster.core.events.chain import genesis_hash
from leviathan_dagster.core.events.checkpoint import (
    Checkpoint,
    NoteSigner,
    checkpoint_origin,
    sign_checkpoint,
)
from leviathan_dagster.core.events.merkle import EMPTY_ROOT
from leviathan_dagster.core.events.model import Event
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.events.postgres.store import PostgresEventLog
from leviathan_dagster.core.events.proofs import build_tree, create_checkpoint, load_verifier
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.events.transfer import (
    ExportHeader,
    ImportRefused,
    export_events,
    import_events,
    verify_export,
)
from leviathan_dagster.core.home import LeviathanHome

LOG_ID = "transfer-test-log"
# The session's temporary database, made and dropped by the PostgreSQL event-log tests' own fixture.
postgres_dsn = test_event_log_postgres.postgres_dsn


def event(index: int, **payload: object) -> Event:
    return Event(
        event_id=f"evt-{index:04d}",
        event_type="test.event",
        timestamp=f"2024-05-01T12:00:{index % 60:02d}.000000Z",
        actor_id="tester",
        payload={"index": index, **payload},
    )


def fill(store: EventStore, count: int = 12) -> None:
    """Events in bundles of several sizes, with payloads canonical JSON must get exactly right."""
    samples = [
        {"text": 'é\x1f \u2028 "quoted" \\ \U0001f600'},
        {"floats": [0.1, 1e16, -0.0, 1.5e-7, 123456789.125]},
        {"nested": {"b": [1, {"z": None, "a": True}], "a": {}}},
        {"big": 2**53 - 1, "neg": -(2**53 - 1)},
    ]
    events = [event(i, **samples[i % len(samples)]) for i in range(1, count + 1)]
    store.append(events[:1])
    store.append(events[1:4])
    for item in events[4:]:
        store.append([item])


def export_bytes(store: EventStore) -> bytes:
    out = io.BytesIO()
    export_events(store, out)
    return out.getvalue()


def header_of(data: bytes) -> ExportHeader:
    return ExportHeader.parse(data.split(b"\n", 1)[0] + b"\n")


def assert_untouched(store: EventStore, path: Path | None = None) -> None:
    assert store.head() == (0, genesis_hash(store.log_id))  # type: ignore[attr-defined]
    assert list(store.read()) == []
    if path is not None:
        assert not path.exists() or path.stat().st_size == 0


@pytest.fixture
def source(tmp_path: Path) -> NdjsonEventLog:
    store = NdjsonEventLog(tmp_path / "source" / "events.ndjson", log_id=LOG_ID)
    fill(store)
    return store


@pytest.fixture
def exported(source: NdjsonEventLog) -> bytes:
    return export_bytes(source)


# -- the round trip -------------------------------------------------------------------------------


def test_ndjson_to_postgres_to_ndjson_is_byte_identical(
    source: NdjsonEventLog, exported: bytes, postgres_dsn: str, tmp_path: Path
) -> None:
    header = header_of(exported)
    assert (header.log_id, header.events) == (LOG_ID, 12)
    assert header.head_hash == source.head()[1]
    assert header.merkle_root == build_tree(source).root().hex()
    # An NDJSON log's lines are the export's event lines, verbatim.
    assert exported.split(b"\n", 1)[1] == source.path.read_bytes()

    with PostgresEventLog(postgres_dsn, log_id=header.log_id, table_prefix=prefix_for(tmp_path)) as pg:
        report = import_events(io.BytesIO(exported), pg, bundle_size=5)
        assert (report.events, report.bundles, report.head_hash) == (12, 3, header.head_hash)
        assert report.merkle_root == header.merkle_root
        from_postgres = export_bytes(pg)
        assert from_postgres == exported
        assert pg.verify().ok
        pg_head, pg_root = pg.head(), build_tree(pg).root().hex()

    final = NdjsonEventLog(tmp_path / "final" / "events.ndjson", log_id=header.log_id)
    import_events(io.BytesIO(from_postgres), final)
    assert final.path.read_bytes() == source.path.read_bytes()
    assert final.meta_path.read_bytes() == source.meta_path.read_bytes()
    assert json.loads(final.meta_path.read_bytes())["log_id"] == LOG_ID
    assert export_bytes(final) == exported
    assert final.verify().ok

    for head, root in [
        (source.head(), build_tree(source).root().hex()),
        (pg_head, pg_root),
        (final.head(), build_tree(final).root().hex()),
    ]:
        assert head == (12, header.head_hash)
        assert root == header.merkle_root


def test_empty_log_round_trips(tmp_path: Path) -> None:
    empty = NdjsonEventLog(tmp_path / "a.ndjson", log_id=LOG_ID)
    data = export_bytes(empty)
    assert header_of(data) == ExportHeader(LOG_ID, 0, genesis_hash(LOG_ID), EMPTY_ROOT.hex())
    target = NdjsonEventLog(tmp_path / "b.ndjson", log_id=LOG_ID)
    assert import_events(io.BytesIO(data), target).events == 0
    assert export_bytes(target) == data


def test_export_refuses_a_broken_chain(source: NdjsonEventLog) -> None:
    lines = source.path.read_bytes().split(b"\n")
    lines[4] = lines[4].replace(b'"index":5', b'"index":6')
    source.path.write_bytes(b"\n".join(lines))
    out = io.BytesIO()
    with pytest.raises(Exception, match="seq 5") as raised:
        export_events(source, out)
    assert raised.value.seq == 5  # type: ignore[attr-defined]
    assert out.getvalue() == b""


# -- refusals: nothing written --------------------------------------------------------------------


def event_line_offset(data: bytes, seq: int) -> int:
    """Offset of the line of ``seq`` (the header is line 0)."""
    offset = 0
    for _ in range(seq):
        offset = data.index(b"\n", offset) + 1
    return offset


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("where", "seq"),
    [
        ("payload", 7),  # a byte of the canonical event bytes
        ("hash", 7),  # a byte of the stored hash
        ("prev_hash", 7),  # a byte of the previous link
        ("seq", 7),  # the seq number
        ("payload", 1),
        ("payload", 12),
    ],
)
def test_tampered_export_is_refused_naming_the_seq(
    exported: bytes, postgres_dsn: str, tmp_path: Path, where: str, seq: int
) -> None:
    start = event_line_offset(exported, seq)
    needle = {"payload": b'"index":', "hash": b'"hash":"', "prev_hash": b'"prev_hash":"', "seq": b'"seq":'}
    at = exported.index(needle[where], start) + len(needle[where])
    tampered = flip(exported, at)
    with PostgresEventLog(postgres_dsn, log_id=LOG_ID, table_prefix=prefix_for(tmp_path)) as pg:
        with pytest.raises(ImportRefused) as raised:
            import_events(io.BytesIO(tampered), pg)
        assert raised.value.seq == seq
        assert f"at seq {seq}" in str(raised.value) and "nothing was written" in str(raised.value)
        assert_untouched(pg)
    target = NdjsonEventLog(tmp_path / "target.ndjson", log_id=LOG_ID)
    with pytest.raises(ImportRefused, match=f"at seq {seq}"):
        import_events(io.BytesIO(tampered), target)
    assert_untouched(target, target.path)


def test_every_single_byte_change_is_refused(tmp_path: Path) -> None:
    target = NdjsonEventLog(tmp_path / "target.ndjson", log_id=LOG_ID)
    small_log = NdjsonEventLog(tmp_path / "small.ndjson", log_id=LOG_ID)
    small_log.append([event(i, text="é") for i in range(1, 4)])
    small = export_bytes(small_log)
    for at in range(len(small)):
        for mask in (0x01, 0x20):
            changed = small[:at] + bytes([small[at] ^ mask]) + small[at + 1 :]
            with pytest.raises(ImportRefused):
                import_events(io.BytesIO(changed), target)
    assert_untouched(target, target.path)


@pytest.mark.parametrize(
    ("cut", "seq", "reason"),
    [
        ("last line", 12, "truncated"),
        ("mid line", 12, "torn"),
        ("all events", 1, "truncated"),
        ("mid header", None, "header line is torn"),
        ("everything", None, "empty"),
    ],
)
def test_truncated_export_is_refused(
    exported: bytes, tmp_path: Path, cut: str, seq: int | None, reason: str
) -> None:
    last = event_line_offset(exported, 12)
    data = {
        "last line": exported[:last],
        "mid line": exported[: last + 40],
        "all events": exported[: event_line_offset(exported, 1)],
        "mid header": exported[:30],
        "everything": b"",
    }[cut]
    target = NdjsonEventLog(tmp_path / "target.ndjson", log_id=LOG_ID)
    with pytest.raises(ImportRefused, match=reason) as raised:
        import_events(io.BytesIO(data), target)
    assert raised.value.seq == seq
    assert_untouched(target, target.path)


@pytest.mark.parametrize(
    ("edit", "seq", "reason"),
    [
        ("drop a middle line", 6, "deleted"),
        ("swap two lines", 6, "deleted"),
        ("repeat a line", 7, "inserted"),
        ("other log_id", 1, "spliced"),
        ("header count", None, "header"),
        ("header head", 12, "head_hash"),
        ("header root", None, "Merkle root"),
        ("extra line", 13, "goes on"),
    ],
)
def test_reshuffled_or_mislabelled_export_is_refused(
    exported: bytes, tmp_path: Path, edit: str, seq: int | None, reason: str
) -> None:
    header, *lines = exported.split(b"\n")[:-1]
    record = json.loads(header)
    if edit == "drop a middle line":
        del lines[5]
        record["events"] -= 1
    elif edit == "swap two lines":
        lines[5], lines[6] = lines[6], lines[5]
    elif edit == "repeat a line":
        lines.insert(6, lines[5])
        record["events"] += 1
    elif edit == "other log_id":
        record["log_id"] = "another-log"
    elif edit == "header count":
        record["events"] = "12"
    elif edit == "header head":
        record["head_hash"] = "0" * 64
    elif edit == "header root":
        record["merkle_root"] = "0" * 64
    elif edit == "extra line":
        lines.append(lines[-1])
    header = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
    data = b"\n".join([header, *lines]) + b"\n"
    target = NdjsonEventLog(tmp_path / "target.ndjson", log_id=record["log_id"])
    with pytest.raises(ImportRefused, match=reason) as raised:
        import_events(io.BytesIO(data), target)
    assert raised.value.seq == seq
    assert_untouched(target, target.path)


def test_non_empty_target_or_other_log_is_refused(exported: bytes, tmp_path: Path) -> None:
    busy = NdjsonEventLog(tmp_path / "busy.ndjson", log_id=LOG_ID)
    busy.append([event(99)])
    before = busy.path.read_bytes()
    with pytest.raises(ConfigError, match="already holds 1 events"):
        import_events(io.BytesIO(exported), busy)
    assert busy.path.read_bytes() == before

    other = NdjsonEventLog(tmp_path / "other.ndjson", log_id="other-log")
    with pytest.raises(ConfigError, match="log_id 'other-log'"):
        import_events(io.BytesIO(exported), other)
    assert_untouched(other, other.path)


def test_non_empty_postgres_target_is_refused(exported: bytes, postgres_dsn: str, tmp_path: Path) -> None:
    with PostgresEventLog(postgres_dsn, log_id=LOG_ID, table_prefix=prefix_for(tmp_path)) as pg:
        pg.append([event(99)])
        with pytest.raises(ConfigError, match="already holds 1 events"):
            import_events(io.BytesIO(exported), pg)
        assert [stored.event.event_id for stored in pg.read()] == ["evt-0099"]
    with pytest.raises(ConfigError, match="log_id"):
        PostgresEventLog(postgres_dsn, log_id="other-log", table_prefix=prefix_for(tmp_path))


# -- checkpoints ----------------------------------------------------------------------------------


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner.generate("transfer-test", seed=bytes(range(32)))


def test_import_checks_a_signed_checkpoint(
    source: NdjsonEventLog, exported: bytes, signer: NoteSigner, tmp_path: Path
) -> None:
    tree = build_tree(source)
    origin = checkpoint_origin(LOG_ID)
    for size in (12, 5, 0):  # the whole log, a prefix, the empty tree: all consistent
        note = sign_checkpoint(Checkpoint(origin, size, tree.root(size)), signer)
        target = NdjsonEventLog(tmp_path / f"ok-{size}.ndjson", log_id=LOG_ID)
        report = import_events(io.BytesIO(exported), target, checkpoint_note=note, verifier=signer.verifier())
        assert report.checkpoint_size == size
        assert target.head() == source.head()


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("wrong root", "do not hash to the checkpoint's root"),
        ("too big", "covers 13 events"),
        ("other log", "is for 'leviathan/another-log'"),
        ("other key", "not signed by key"),
        ("bad signature", "invalid signature"),
    ],
)
def test_import_refuses_a_checkpoint_that_does_not_match(
    source: NdjsonEventLog, exported: bytes, signer: NoteSigner, tmp_path: Path, kind: str, reason: str
) -> None:
    tree = build_tree(source)
    origin = checkpoint_origin(LOG_ID)
    cp = {
        "wrong root": Checkpoint(origin, 12, tree.root(11)),
        "too big": Checkpoint(origin, 13, tree.root()),
        "other log": Checkpoint(checkpoint_origin("another-log"), 12, tree.root()),
    }.get(kind, Checkpoint(origin, 12, tree.root()))
    by = NoteSigner.generate("transfer-test") if kind == "other key" else signer
    note = sign_checkpoint(cp, by)
    if kind == "bad signature":
        note = note.replace("\n12\n", "\n11\n")
    target = NdjsonEventLog(tmp_path / "target.ndjson", log_id=LOG_ID)
    with pytest.raises(ImportRefused, match=reason):
        import_events(io.BytesIO(exported), target, checkpoint_note=note, verifier=signer.verifier())
    assert_untouched(target, target.path)
    with pytest.raises(ConfigError, match="verifier"):
        import_events(io.BytesIO(exported), target, checkpoint_note=note)


def test_verified_copy_is_what_gets_appended(exported: bytes, tmp_path: Path) -> None:
    """The source changing after verification cannot smuggle anything in: the private copy is appended."""
    source = io.BytesIO(exported)
    with verify_export(source) as verified:
        source.seek(0)
        source.write(b"X" * len(exported))
        target = NdjsonEventLog(tmp_path / "target.ndjson", log_id=verified.header.log_id)
        verified.commit(target, bundle_size=4)
    assert export_bytes(target) == exported


# -- the command line -----------------------------------------------------------------------------


def run(home: Path, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(
        cli,
        ["--config", str(home / "absent.yaml"), "--home", str(home), *args],
        catch_exceptions=False,
        env=env,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    fill(NdjsonEventLog(LeviathanHome(root).events_path, log_id=LOG_ID))
    return root


@pytest.mark.parametrize("command", ["export", "import"])
def test_cli_help_has_examples(command: str) -> None:
    result = CliRunner().invoke(cli, ["events", command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and f"leviathan events {command}" in result.output


def test_cli_round_trip_through_postgres(home: Path, postgres_dsn: str, tmp_path: Path) -> None:
    original = LeviathanHome(home).events_path
    export_file = tmp_path / "log.export"
    exported = run(home, "events", "export", "--out", str(export_file))
    assert exported.exit_code == 0, exported.output
    assert "exported 12 events of log transfer-test-log" in exported.output
    to_stdout = run(home, "events", "export")
    assert to_stdout.exit_code == 0 and to_stdout.stdout_bytes == export_file.read_bytes()
    header = header_of(export_file.read_bytes())

    env = {"LEVIATHAN_EVENT_LOG_DSN": postgres_dsn}
    into_pg = run(home, "events", "import", str(export_file), "--to", "postgres", "--json", env=env)
    assert into_pg.exit_code == 0, into_pg.output
    assert json.loads(into_pg.stdout)["head_hash"] == header.head_hash
    with PostgresEventLog(postgres_dsn, table_prefix="leviathan") as pg:
        assert pg.log_id == LOG_ID
        pg_export = tmp_path / "pg.export"
        pg_export.write_bytes(export_bytes(pg))
    assert pg_export.read_bytes() == export_file.read_bytes()

    final = tmp_path / "final" / "events.ndjson"
    back = run(home, "events", "import", str(pg_export), "--to", f"ndjson:{final}")
    assert back.exit_code == 0, back.output
    assert f"imported 12 events of log {LOG_ID}" in back.output
    assert final.read_bytes() == original.read_bytes()
    assert Path(f"{final}.meta.json").read_bytes() == Path(f"{original}.meta.json").read_bytes()

    again = run(home, "events", "import", str(pg_export), "--to", "postgres", env=env)
    assert again.exit_code == 2 and "already holds 12 events" in again.output


def test_cli_import_with_checkpoint_and_refusals(home: Path, tmp_path: Path) -> None:
    assert run(home, "events", "checkpoint").exit_code == 0
    note = home / "checkpoints" / "latest.note"
    export_file = tmp_path / "log.export"
    assert run(home, "events", "export", "--out", str(export_file)).exit_code == 0
    key = load_verifier(LeviathanHome(home)).to_key()

    ok = tmp_path / "ok.ndjson"
    result = run(
        home, "events", "import", str(export_file), "--to", f"ndjson:{ok}", "--checkpoint", str(note)
    )
    assert result.exit_code == 0, result.output
    assert "checkpoint of 12 events verified" in result.output
    with_key = tmp_path / "with-key.ndjson"
    args = ["--checkpoint", str(note), "--verifier-key", key]
    assert run(home, "events", "import", str(export_file), "--to", f"ndjson:{with_key}", *args).exit_code == 0

    # A checkpoint signed later over more events than the export holds: the export is truncated.
    NdjsonEventLog(LeviathanHome(home).events_path).append([event(13)])
    create_checkpoint(NdjsonEventLog(LeviathanHome(home).events_path), LeviathanHome(home))
    refused = tmp_path / "refused.ndjson"
    result = run(
        home, "events", "import", str(export_file), "--to", f"ndjson:{refused}", "--checkpoint", str(note)
    )
    assert result.exit_code == 1 and "covers 13 events" in result.output
    assert not refused.exists() and not Path(f"{refused}.meta.json").exists()  # not even created

    data = export_file.read_bytes()
    tampered = tmp_path / "tampered.export"
    tampered.write_bytes(flip(data, data.index(b'"index":', event_line_offset(data, 2)) + 8))
    result = run(home, "events", "import", str(tampered), "--to", f"ndjson:{refused}")
    assert result.exit_code == 1 and "import refused at seq 2" in result.output
    assert not refused.exists() and not Path(f"{refused}.meta.json").exists()

    busy = run(home, "events", "import", str(export_file))  # the configured log is not empty
    assert busy.exit_code == 2 and "already holds 13 events" in busy.output
    bad_to = run(home, "events", "import", str(export_file), "--to", "sqlite")
    assert bad_to.exit_code == 2 and "ndjson:PATH or postgres" in bad_to.output


def test_cli_prints_progress_for_large_logs(home: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(transfer, "PROGRESS_STEP", 5)
    export_file = tmp_path / "log.export"
    result = run(home, "events", "export", "--out", str(export_file))
    assert "export: 10 events" in result.stderr
    result = run(home, "events", "import", str(export_file), "--to", f"ndjson:{tmp_path / 'x.ndjson'}")
    assert result.exit_code == 0
    assert "verify: 5 of 12 events" in result.stderr and "append: 12 of 12 events" in result.stderr
    assert "verify" not in result.stdout
