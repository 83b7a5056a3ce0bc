"""Signed checkpoints, proofs over a real NDJSON log, the CLI, and the committed golden vectors."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from test_merkle import ref_mth

from leviathan_dagster.cli.events import verify
from leviathan_dagster.cli.events_proofs import EVENTS_COMMANDS, checkpoint, prove, verify_checkpoint
from leviathan_dagster.cli.main import CliContext
from leviathan_dagster.core.errors import NotFoundError
from leviathan_dagster.core.events.chain import canonical_event_bytes
from leviathan_dagster.core.events.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    open_note,
    sign_checkpoint,
    sign_note,
)
from leviathan_dagster.core.events.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from leviathan_dagster.core.events.model import Event
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.events.proofs import (
    build_tree,
    checkpoints_dir,
    create_checkpoint,
    keys_dir,
    load_verifier,
    prove_event,
    verify_against_checkpoint,
    verify_event_proof,
)
from leviathan_dagster.core.home import LeviathanHome

VECTORS = Path(__file__).parent / "vectors" / "checkpoint_v1.json"


def make_events(count: int, tag: str = "e", start: int = 0) -> list[Event]:
    return [
        Event(f"{tag}-{i}", "attempt.started", f"2024-01-01T00:00:{i % 60:02d}.000000Z", "test", {"n": i})
        for i in range(start, start + count)
    ]


def open_log(home: LeviathanHome, log_id: str = "log-a") -> NdjsonEventLog:
    return NdjsonEventLog(home.events_path, log_id=log_id)


@pytest.fixture
def home(tmp_path: Path) -> LeviathanHome:
    return LeviathanHome(tmp_path / "home")


def rewrite_log(home: LeviathanHome, tmp_path: Path, events: list[Event], log_id: str = "log-a") -> None:
    """Replace the home's log with another whose chain is fully re-hashed, so the chain still verifies."""
    other = LeviathanHome(tmp_path / "forger")
    open_log(other, log_id).append(events)
    for suffix in ("", ".meta.json"):
        shutil.copyfile(f"{other.events_path}{suffix}", f"{home.events_path}{suffix}")


def truncate_log(home: LeviathanHome, keep: int) -> None:
    lines = home.events_path.read_bytes().splitlines(keepends=True)
    home.events_path.write_bytes(b"".join(lines[:keep]))


# -- signed notes and keys ---------------------------------------------------------------------------


def test_key_strings_round_trip_in_the_go_note_formats() -> None:
    signer = NoteSigner.generate("example.com/log")
    skey, vkey = signer.to_key(), signer.verifier().to_key()
    assert skey.startswith("PRIVATE+KEY+example.com/log+") and vkey.startswith("example.com/log+")
    assert NoteSigner.from_key(skey) == signer and NoteVerifier.from_key(vkey) == signer.verifier()
    name, key_id, data = vkey.split("+", 2)
    raw = base64.b64decode(data)
    assert raw[0] == 1 and len(key_id) == 8
    assert key_id == hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex()
    assert "seed" not in repr(signer) and signer.seed.hex() not in repr(signer)
    for bad in (vkey.replace(key_id, "00000000"), "a+b", f"bad name+{key_id}+{data}", f"x+{key_id}+AQ=="):
        with pytest.raises(CheckpointError):
            NoteVerifier.from_key(bad)
    with pytest.raises(CheckpointError):
        NoteSigner.from_key(skey.replace("PRIVATE+KEY", "PUBLIC+KEY"))


# The example key and note of Go's golang.org/x/mod/sumdb/note tests (note_test.go). Ed25519 signing is
# deterministic, so matching them byte for byte shows Go verifiers and witnesses accept our notes.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
GO_SIG = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="


def test_go_note_reference_vector_matches_byte_for_byte() -> None:
    signer, verifier = NoteSigner.from_key(GO_SKEY), NoteVerifier.from_key(GO_VKEY)
    assert signer.to_key() == GO_SKEY and verifier.to_key() == GO_VKEY and signer.verifier() == verifier
    note = sign_note(GO_TEXT, signer)
    assert note == f"{GO_TEXT}\n\u2014 PeterNeumann {GO_SIG}\n"
    assert open_note(note, verifier) == GO_TEXT
    with pytest.raises(CheckpointError):
        open_note(note.replace("cryptography", "cryptographY"), verifier)


def test_sign_and_open_round_trip() -> None:
    signer = NoteSigner.generate("leviathan/log-a")
    cp = Checkpoint("leviathan/log-a", 3, hashlib.sha256(b"r").digest())
    note = sign_checkpoint(cp, signer)
    body, sig_line = note.split("\n\n")
    assert body + "\n" == f"leviathan/log-a\n3\n{base64.b64encode(cp.root).decode()}\n"
    assert sig_line.startswith("\u2014 leviathan/log-a ") and sig_line.endswith("\n")
    assert open_checkpoint(note, signer.verifier()) == cp


def test_wrong_key_tampered_body_and_tampered_signature_are_rejected() -> None:
    signer = NoteSigner.generate("leviathan/log-a")
    note = sign_checkpoint(Checkpoint("leviathan/log-a", 3, bytes(32)), signer)
    with pytest.raises(CheckpointError, match="not signed by"):
        open_checkpoint(note, NoteSigner.generate("leviathan/log-a").verifier())
    with pytest.raises(CheckpointError, match="invalid signature"):
        open_checkpoint(note.replace("\n3\n", "\n4\n", 1), signer.verifier())
    body, sig = note.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(sig))
    raw[-1] ^= 1
    with pytest.raises(CheckpointError, match="invalid signature"):
        open_checkpoint(f"{body} {base64.b64encode(raw).decode()}\n", signer.verifier())


def test_foreign_signatures_are_ignored_and_malformed_notes_rejected() -> None:
    signer, witness = NoteSigner.generate("leviathan/log-a"), NoteSigner.generate("witness")
    cp = Checkpoint("leviathan/log-a", 0, hashlib.sha256(b"").digest(), ("extension line",))
    note = sign_checkpoint(cp, signer)
    cosigned = note + sign_checkpoint(cp, witness).split("\n\n")[1]
    assert open_checkpoint(cosigned, signer.verifier()) == cp
    assert open_checkpoint(cosigned, witness.verifier()) == cp
    body = cp.body()
    for bad in (body, body + "\n", note.replace("\u2014", "-"), note[:-1], note.replace("\n0\n", "\n\t0\n")):
        with pytest.raises(CheckpointError):
            open_note(bad, signer.verifier())
    for bad_body in ("o\n01\nAAAA\n", "o\n1\nAAAA\n", "o\n1\n", f"o\n-1\n{body.split()[2]}\n"):
        with pytest.raises(CheckpointError, match="malformed"):
            Checkpoint.parse(bad_body)


# -- checkpoints over a real log ---------------------------------------------------------------------


def test_first_checkpoint_creates_a_private_key_and_note_files(home: LeviathanHome) -> None:
    store = open_log(home)
    store.append(make_events(5))
    cp, note = create_checkpoint(store, home)
    assert (cp.origin, cp.size, cp.root) == ("leviathan/log-a", 5, build_tree(store).root())
    key = keys_dir(home) / "checkpoint.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_text().startswith("PRIVATE+KEY+")
    folder = checkpoints_dir(home)
    assert (folder / "000000000005.note").read_text() == (folder / "latest.note").read_text() == note
    assert open_checkpoint(note, load_verifier(home)) == cp


def test_appended_log_gets_a_consistent_checkpoint_with_the_same_key(home: LeviathanHome) -> None:
    store = open_log(home)
    store.append(make_events(5))
    first, _ = create_checkpoint(store, home)
    store.append(make_events(6, start=5))
    second, note = create_checkpoint(store, home)
    tree = build_tree(store)
    assert second.size == 11
    assert verify_consistency(5, 11, first.root, second.root, tree.consistency_proof(5))
    assert verify_against_checkpoint(store, note, load_verifier(home)).ok
    assert sorted(p.name for p in checkpoints_dir(home).glob("*.note")) == [
        "000000000005.note",
        "000000000011.note",
        "latest.note",
    ]


def test_rewritten_log_with_a_valid_chain_is_refused_and_detected(
    home: LeviathanHome, tmp_path: Path
) -> None:
    store = open_log(home)
    store.append(make_events(6))
    _, note = create_checkpoint(store, home)
    forged = make_events(6)
    forged[2] = Event("e-2", "attempt.started", forged[2].timestamp, "test", {"n": "forged"})
    rewrite_log(home, tmp_path, [*forged, *make_events(2, start=6)])
    store = open_log(home)
    assert store.verify().ok  # the chain alone cannot tell
    with pytest.raises(CheckpointError, match="rewritten"):
        create_checkpoint(store, home)
    assert (checkpoints_dir(home) / "latest.note").read_text() == note
    report = verify_against_checkpoint(store, note, load_verifier(home))
    assert (report.ok, report.finding, report.checkpoint_size, report.log_size) == (False, "rewritten", 6, 8)


def test_truncated_log_is_refused_and_detected(home: LeviathanHome) -> None:
    store = open_log(home)
    store.append(make_events(7))
    _, note = create_checkpoint(store, home)
    truncate_log(home, 4)
    store = open_log(home)
    assert store.verify().ok
    with pytest.raises(CheckpointError, match="truncated"):
        create_checkpoint(store, home)
    report = verify_against_checkpoint(store, note, load_verifier(home))
    assert (report.finding, report.log_size) == ("truncated", 4) and "seq 5..7" in report.detail


def test_broken_chain_forged_note_and_other_log_are_named(home: LeviathanHome, tmp_path: Path) -> None:
    store = open_log(home)
    store.append(make_events(3))
    _, note = create_checkpoint(store, home)
    verifier = load_verifier(home)
    forged = note.replace("\n3\n", "\n2\n", 1)
    assert verify_against_checkpoint(store, forged, verifier).finding == "bad-checkpoint"
    other = NdjsonEventLog(tmp_path / "other" / "events.ndjson", log_id="log-b")
    other.append(make_events(3))
    assert verify_against_checkpoint(other, note, verifier).finding == "other-log"
    home.events_path.write_bytes(home.events_path.read_bytes().replace(b'"n":1', b'"n":9'))
    with pytest.raises(CheckpointError, match="chain broken at seq 2"):
        create_checkpoint(open_log(home), home)


# -- event proofs ------------------------------------------------------------------------------------


def test_deleting_latest_note_does_not_let_the_signer_contradict_itself(
    home: LeviathanHome, tmp_path: Path
) -> None:
    # The fault: with latest.note deleted, `events checkpoint` signed a history contradicting an
    # earlier checkpoint. Every numbered note counts, and so does the state kept beside the key.
    store = open_log(home)
    store.append(make_events(5))
    create_checkpoint(store, home)
    store.append(make_events(3, start=5))
    create_checkpoint(store, home)
    rewrite_log(home, tmp_path, make_events(4) + make_events(6, tag="forged"))
    (checkpoints_dir(home) / "latest.note").unlink()
    with pytest.raises(CheckpointError, match="rewritten"):
        create_checkpoint(open_log(home), home)
    state = keys_dir(home) / "checkpoint.state"
    saved = state.read_bytes()
    state.unlink()  # the numbered notes alone still remember
    with pytest.raises(CheckpointError, match=r"000000000005\.note: the log was rewritten"):
        create_checkpoint(open_log(home), home)
    state.write_bytes(saved)
    shutil.rmtree(checkpoints_dir(home))  # all the notes gone: the key's state still remembers
    with pytest.raises(CheckpointError, match="checkpoint.state.*rewritten"):
        create_checkpoint(open_log(home), home)
    truncate_log(home, 6)
    with pytest.raises(CheckpointError, match="checkpoint.state signed 8: truncated"):
        create_checkpoint(open_log(home), home)
    assert not checkpoints_dir(home).exists() or not list(checkpoints_dir(home).glob("*.note"))


def test_a_note_by_another_key_among_the_checkpoints_stops_the_signer(home: LeviathanHome) -> None:
    store = open_log(home)
    store.append(make_events(3))
    create_checkpoint(store, home)
    stranger = NoteSigner.generate("leviathan/log-a")
    forged = sign_checkpoint(Checkpoint("leviathan/log-a", 2, b"\x07" * 32), stranger)
    (checkpoints_dir(home) / "000000000002.note").write_text(forged, encoding="utf-8")
    with pytest.raises(CheckpointError, match="000000000002.note does not verify"):
        create_checkpoint(store, home)


def test_an_empty_log_is_not_checkpointed(home: LeviathanHome) -> None:
    with pytest.raises(CheckpointError, match="empty"):
        create_checkpoint(open_log(home), home)


def test_prove_event_without_and_with_checkpoints(home: LeviathanHome) -> None:
    store = open_log(home)
    store.append(make_events(9))
    proof = prove_event(store, "e-4", home)
    assert (proof["seq"], proof["leaf_index"], proof["tree_size"], proof["checkpoint"]) == (5, 4, 9, None)
    verify_event_proof(proof)
    create_checkpoint(store, home)
    store.append(make_events(4, start=9))
    old = prove_event(store, "e-4", home)
    new = prove_event(store, "e-11", home)
    verifier = load_verifier(home)
    for proof in (old, new):
        verify_event_proof(json.loads(json.dumps(proof)), verifier)
    assert old["checkpoint"]["size"] == 9 and old["checkpoint"]["inclusion_proof"]
    assert new["checkpoint"]["inclusion_proof"] is None
    with pytest.raises(NotFoundError):
        prove_event(store, "missing", home)


def test_tampered_event_proofs_fail(home: LeviathanHome) -> None:
    store = open_log(home)
    store.append(make_events(6))
    create_checkpoint(store, home)
    store.append(make_events(3, start=6))
    good = prove_event(store, "e-2", home)
    verifier = load_verifier(home)

    def tampered(edit) -> dict:  # type: ignore[no-untyped-def]
        proof = json.loads(json.dumps(good))
        edit(proof)
        return proof

    cases = [
        lambda p: p.update(leaf=p["leaf"].replace('"n":2', '"n":3')),
        lambda p: p.update(event_id="e-3"),
        lambda p: p.update(leaf_index=3),
        lambda p: p["inclusion_proof"].reverse(),
        lambda p: p["checkpoint"].update(root=p["root"]),
        lambda p: p["checkpoint"]["consistency_proof"].pop(),
        lambda p: p["checkpoint"].update(note=p["checkpoint"]["note"].replace("\n6\n", "\n5\n")),
    ]
    for edit in cases:
        with pytest.raises(CheckpointError):
            verify_event_proof(tampered(edit), verifier)


# -- the CLI -----------------------------------------------------------------------------------------


@click.command("verify")
@click.argument("path")
@click.pass_obj
def verify_cmd(obj: CliContext, path: str) -> None:
    verify_checkpoint(obj, path)


def run(home: LeviathanHome, command: click.Command, *args: str):
    obj = CliContext(config_path=home.root / "leviathan.yaml", home=home)
    return CliRunner().invoke(command, list(args), obj=obj, catch_exceptions=False)


def test_cli_checkpoint_prove_and_verify(home: LeviathanHome) -> None:
    store = NdjsonEventLog(home.events_path)
    store.append(make_events(4))
    made = run(home, checkpoint)
    assert made.exit_code == 0, made.output
    assert "checkpoint of 4 events written" in made.output and "verifier key: leviathan/" in made.output
    proved = run(home, prove, "--event", "e-1", "--json")
    assert proved.exit_code == 0, proved.output
    verify_event_proof(json.loads(proved.output), load_verifier(home))
    assert "is leaf 1 of the tree of 4" in run(home, prove, "--event", "e-1").output
    assert run(home, prove, "--event", "nope").exit_code == 1
    latest = str(checkpoints_dir(home) / "latest.note")
    assert run(home, verify_cmd, latest).exit_code == 0
    truncate_log(home, 2)
    failed = run(home, verify_cmd, latest)
    assert failed.exit_code == 1 and "FAILED (truncated)" in failed.output
    refused = run(home, checkpoint)
    assert refused.exit_code == 1 and "REFUSED" in refused.output


def test_events_verify_checks_the_latest_checkpoint_and_never_says_verified_after_a_failure(
    home: LeviathanHome, tmp_path: Path
) -> None:
    store = open_log(home)
    store.append(make_events(95))
    assert run(home, checkpoint).exit_code == 0
    ok = run(home, verify)
    assert (
        ok.exit_code == 0 and "chain verified: 95 events" in ok.output and "checkpoint verified" in ok.output
    )
    truncate_log(home, 50)
    cut = run(home, verify)
    assert cut.exit_code == 1 and "truncated" in cut.output and "verified" not in cut.output
    as_json = json.loads(run(home, verify, "--json").output)
    assert as_json["ok"] is True and as_json["checkpoint"]["finding"] == "truncated"


def test_verify_with_a_pinned_key_catches_a_home_whose_key_was_replaced(
    home: LeviathanHome, tmp_path: Path
) -> None:
    store = open_log(home)
    store.append(make_events(6))
    assert run(home, checkpoint).exit_code == 0
    pinned = load_verifier(home).to_key()
    pin_file = tmp_path / "pinned.pub"
    pin_file.write_text(pinned + "\n", encoding="utf-8")
    # Someone with write access to the home rewrites the log, replaces the key and re-signs.
    rewrite_log(home, tmp_path, make_events(6, tag="forged"))
    shutil.rmtree(keys_dir(home))
    shutil.rmtree(checkpoints_dir(home))
    assert run(home, checkpoint).exit_code == 0
    assert run(home, verify).exit_code == 0  # the home's own key vouches for its own forgery
    for key in (pinned, str(pin_file)):
        result = run(home, verify, "--verifier-key", key)
        assert result.exit_code == 1 and "bad-checkpoint" in result.output, result.output
        assert "verified" not in result.output
    bad_key = run(home, verify, "--verifier-key", "not-a-key")
    assert bad_key.exit_code == 1 and "bad-checkpoint" in bad_key.output


def test_cli_commands_have_help_with_an_example() -> None:
    assert [c.name for c in EVENTS_COMMANDS] == ["checkpoint", "prove"]
    for command in EVENTS_COMMANDS:
        result = CliRunner().invoke(command, ["--help"])
        assert result.exit_code == 0 and "Example:" in result.output


# -- golden vectors ----------------------------------------------------------------------------------


def compute_vectors(spec: dict) -> dict:
    """Everything derivable from the vector file's inputs (events, log id, test seed), recomputed."""
    events = [
        Event(**{k: e[k] for k in ("event_id", "event_type", "timestamp", "actor_id", "payload")})
        for e in spec["events"]
    ]
    data = [canonical_event_bytes(e) for e in events]
    tree = MerkleTree.from_leaves(data)
    key = spec["test_key"]
    signer = NoteSigner.generate(key["name"], bytes.fromhex(key["seed_hex"]))
    inc, con = spec["inclusion"], spec["consistency"]
    return {
        "canonical": [d.decode() for d in data],
        "sha256": [hashlib.sha256(d).hexdigest() for d in data],
        "leaf_hash": [leaf_hash(d).hex() for d in data],
        "roots": [tree.root(n).hex() for n in range(len(data) + 1)],
        "inclusion": [h.hex() for h in tree.inclusion_proof(inc["index"], inc["size"])],
        "consistency": [h.hex() for h in tree.consistency_proof(con["m"], con["n"])],
        "signer_key": signer.to_key(),
        "verifier_key": signer.verifier().to_key(),
        "note": sign_checkpoint(Checkpoint(spec["origin"], len(data), tree.root()), signer),
    }


def test_golden_vectors_recompute_byte_for_byte(tmp_path: Path) -> None:
    spec = json.loads(VECTORS.read_text(encoding="utf-8"))
    got = compute_vectors(spec)
    assert got["canonical"] == [e["canonical"] for e in spec["events"]]
    assert got["sha256"] == [e["sha256"] for e in spec["events"]]
    assert got["leaf_hash"] == [e["leaf_hash"] for e in spec["events"]]
    assert got["roots"] == spec["roots"]
    assert (
        got["inclusion"] == spec["inclusion"]["proof"] and got["consistency"] == spec["consistency"]["proof"]
    )
    assert (got["signer_key"], got["verifier_key"]) == (
        spec["test_key"]["signer_key"],
        spec["test_key"]["verifier_key"],
    )
    assert got["note"] == spec["checkpoint"]["note"]


def test_golden_vectors_agree_with_independent_checks(tmp_path: Path) -> None:
    spec = json.loads(VECTORS.read_text(encoding="utf-8"))
    data = [e["canonical"].encode() for e in spec["events"]]
    assert spec["roots"] == [ref_mth(data[:n]).hex() for n in range(len(data) + 1)]
    inc, con = spec["inclusion"], spec["consistency"]
    root = bytes.fromhex(spec["roots"][inc["size"]])
    path = [bytes.fromhex(h) for h in inc["proof"]]
    assert verify_inclusion(inc["index"], inc["size"], leaf_hash(data[inc["index"]]), path, root)
    roots = [bytes.fromhex(r) for r in spec["roots"]]
    assert verify_consistency(
        con["m"], con["n"], roots[con["m"]], roots[con["n"]], [bytes.fromhex(h) for h in con["proof"]]
    )
    # The note's signature checked with the raw Ed25519 primitive, outside our note code.
    body, line = spec["checkpoint"]["note"].split("\n\n")
    name, sig = line.removeprefix("\u2014 ").rstrip("\n").split(" ")
    raw_sig = base64.b64decode(sig)
    public = base64.b64decode(spec["test_key"]["verifier_key"].split("+", 2)[2])[1:]
    assert raw_sig[:4] == hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4]
    Ed25519PublicKey.from_public_bytes(public).verify(raw_sig[4:], (body + "\n").encode())
    # The same events through a real NDJSON log give the same root, and the note checks out against it.
    store = NdjsonEventLog(tmp_path / "events.ndjson", log_id=spec["log_id"])
    store.append(
        [
            Event(**{k: e[k] for k in ("event_id", "event_type", "timestamp", "actor_id", "payload")})
            for e in spec["events"]
        ]
    )
    assert build_tree(store).root().hex() == spec["roots"][-1]
    verifier = NoteVerifier.from_key(spec["test_key"]["verifier_key"])
    assert NoteSigner.from_key(spec["test_key"]["signer_key"]).verifier() == verifier
    assert verify_against_checkpoint(store, spec["checkpoint"]["note"], verifier).ok


if __name__ == "__main__" and sys.argv[1:] == ["--write-vectors"]:  # pragma: no cover
    # Regenerate only for an intended format change: the diff of the JSON is what a reviewer checks.
    spec = json.loads(VECTORS.read_text(encoding="utf-8"))
    got = compute_vectors(spec)
    for event, canonical, sha, leaf in zip(
        spec["events"], got["canonical"], got["sha256"], got["leaf_hash"], strict=True
    ):
        event.update(canonical=canonical, sha256=sha, leaf_hash=leaf)
    spec["roots"] = got["roots"]
    spec["inclusion"]["proof"], spec["consistency"]["proof"] = got["inclusion"], got["consistency"]
    spec["test_key"].update(signer_key=got["signer_key"], verifier_key=got["verifier_key"])
    spec["checkpoint"] = {"size": len(spec["events"]), "note": got["note"]}
    VECTORS.write_text(json.dumps(spec, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
