"""``leviathan events checkpoint|prove`` and the checkpoint half of ``events verify --checkpoint FILE``."""

from __future__ import annotations

from pathlib import Path

import click

from leviathan_dagster.cli.context import CliContext, emit_json, pass_ctx
from leviathan_dagster.core.errors import LeviathanError, NotFoundError
from leviathan_dagster.core.events.checkpoint import CheckpointError, NoteVerifier
from leviathan_dagster.core.events.proofs import (
    CheckpointReport,
    checkpoints_dir,
    create_checkpoint,
    load_verifier,
    prove_event,
    verify_against_checkpoint,
    verify_event_proof,
)
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.projections.log_view import snapshot_projections


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@pass_ctx
def checkpoint(ctx: CliContext, as_json: bool) -> None:
    """Sign a checkpoint (size and Merkle root) of the log; exit 1 and sign nothing if the log no
    longer extends the latest checkpoint (truncated or rewritten).

    The first run creates the signing key under <home>/keys/; hand out the printed verifier key.
    It also snapshots every projection at the log's head (see docs/event-log.md, "Projection
    snapshots"), so the next process to start folds nothing older.

    \b
    Example:
      leviathan events checkpoint
    """
    store = ctx.event_log()
    try:
        cp, note = create_checkpoint(store, ctx.home)
    except CheckpointError as exc:
        click.secho(f"checkpoint REFUSED: {exc}", fg="red")
        raise SystemExit(1) from None
    snapshot_projections(store)
    path = checkpoints_dir(ctx.home) / f"{cp.size:012d}.note"
    verifier_key = load_verifier(ctx.home).to_key()
    if as_json:
        fields = {"origin": cp.origin, "size": cp.size, "root": cp.root.hex(), "note": note}
        emit_json({**fields, "path": str(path), "verifier_key": verifier_key})
        return
    click.echo(note, nl=False)
    click.secho(f"checkpoint of {cp.size} events written to {path}", fg="green")
    click.echo(f"verifier key: {verifier_key}")


@click.command()
@click.option("--event", "event_id", required=True, help="The event_id to prove, e.g. from `events tail`.")
@click.option("--json", "as_json", is_flag=True, help="The whole proof as JSON, to check elsewhere.")
@pass_ctx
def prove(ctx: CliContext, event_id: str, as_json: bool) -> None:
    """Prove that an event is in the log: an inclusion proof in the Merkle tree and a consistency
    proof from the latest signed checkpoint. Exit 1 if the event is missing or a proof fails.

    \b
    Example:
      leviathan events prove --event 0b6f3c1e-2d4a-4c8e-9f10-5a7d2e9c4b11 --json > proof.json
    """
    try:
        proof = prove_event(ctx.event_log(read_only=True), event_id, ctx.home)
        verify_event_proof(proof, load_verifier(ctx.home) if proof["checkpoint"] else None)
    except (CheckpointError, NotFoundError) as exc:
        click.secho(f"cannot prove event {event_id}: {exc}", fg="red")
        raise SystemExit(1) from None
    if as_json:
        emit_json(proof)
        return
    click.secho(
        f"event {event_id} (seq {proof['seq']}) is leaf {proof['leaf_index']} of the tree of "
        f"{proof['tree_size']} events, root {proof['root']}",
        fg="green",
    )
    click.echo(f"inclusion proof: {len(proof['inclusion_proof'])} hashes (use --json to see them)")
    cp = proof["checkpoint"]
    if cp is None:
        click.echo("no checkpoint yet: run `leviathan events checkpoint` to anchor the root in a signed note")
    else:
        click.echo(f"consistent with signed checkpoint of {cp['size']} events, root {cp['root']}")


def verify_checkpoint(
    ctx: CliContext,
    path: str | Path,
    *,
    verifier_key: str | None = None,
    store: EventStore | None = None,
    quiet: bool = False,
    exit_on_failure: bool = True,
) -> CheckpointReport:
    """Check the log against the signed checkpoint in ``path`` (``events verify``'s checkpoint half).

    ``verifier_key`` pins the key to trust (a key string or a file holding one); without it the home's
    ``keys/checkpoint.pub`` is used. A missing or unreadable key or note is a failed check
    (``bad-checkpoint``), never a pass. Prints one line unless ``quiet``, and exits 1 on failure unless
    ``exit_on_failure`` is False (``quiet`` callers report themselves and never exit here).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
        verifier = resolve_verifier(ctx.home, verifier_key)
    except (OSError, UnicodeDecodeError, LeviathanError) as exc:
        report = CheckpointReport(False, "bad-checkpoint", f"cannot check {path}: {exc}")
    else:
        report = verify_against_checkpoint(store or ctx.event_log(read_only=True), text, verifier)
    if quiet:
        return report
    if report.ok:
        click.secho(f"checkpoint verified: {report.detail}", fg="green")
    else:
        click.secho(f"checkpoint check FAILED ({report.finding}): {report.detail}", fg="red")
    if not report.ok and exit_on_failure:
        raise SystemExit(1)
    return report


def resolve_verifier(home: LeviathanHome, verifier_key: str | None) -> NoteVerifier:
    """The pinned verifier key (a key, or a file holding one), else the home's own."""
    if verifier_key is None:
        return load_verifier(home)
    candidate = Path(verifier_key).expanduser()
    if candidate.is_file():
        return NoteVerifier.from_key(candidate.read_text(encoding="utf-8"))
    return NoteVerifier.from_key(verifier_key)


EVENTS_COMMANDS = [checkpoint, prove]
