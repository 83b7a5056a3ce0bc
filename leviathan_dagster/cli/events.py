"""``leviathan events tail|verify``."""

from __future__ import annotations

from pathlib import Path

import click

from leviathan_dagster.cli.context import CliContext, emit_json, pass_ctx
from leviathan_dagster.cli.events_proofs import EVENTS_COMMANDS, verify_checkpoint
from leviathan_dagster.cli.events_tail import tail
from leviathan_dagster.cli.events_transfer import TRANSFER_COMMANDS
from leviathan_dagster.core.events.proofs import LATEST_FILE, checkpoints_dir
from leviathan_dagster.core.projections.snapshot_checks import DIFFERS, SnapshotCheck, check_snapshots


@click.group()
def events() -> None:
    """Read and verify the hash-chained event log."""


events.add_command(tail)


@events.command()
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Check the log against this signed checkpoint [default: <home>/checkpoints/latest.note if any].",
)
@click.option(
    "--verifier-key",
    help="The checkpoint key to trust: a verifier key (name+id+key) or a file holding one "
    "[default: <home>/keys/checkpoint.pub]. Pin it when the home itself is what you are checking.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@pass_ctx
def verify(ctx: CliContext, checkpoint_file: str | None, verifier_key: str | None, as_json: bool) -> None:
    """Re-hash the whole chain and check it against the latest signed checkpoint; exit 1 and name
    the first bad seq (or the checkpoint finding) if anything was changed, cut or torn. Then refold
    the log to each kept projection snapshot and exit 1 if one holds another state (forged).

    \b
    Example:
      leviathan events verify
      leviathan events verify --checkpoint copy-of-latest.note --verifier-key leviathan/…+1a2b3c4d+AQ…
    """
    store = ctx.event_log(read_only=True)
    report = store.verify()
    note = Path(checkpoint_file) if checkpoint_file else checkpoints_dir(ctx.home) / LATEST_FILE
    checked = None
    if report.ok and (checkpoint_file or note.exists()):
        checked = verify_checkpoint(ctx, note, verifier_key=verifier_key, store=store, quiet=True)
    snapshots = check_snapshots(store) if report.ok else []
    forged = [check for check in snapshots if check.problem == DIFFERS]
    if as_json:
        emit_json(
            {
                **report.__dict__,
                "checkpoint": checked.to_dict() if checked else None,
                "projection_snapshots": [_snapshot_row(check) for check in snapshots],
            }
        )
    elif not report.ok:
        where = f" (bytes {report.byte_range[0]}..{report.byte_range[1]})" if report.byte_range else ""
        click.secho(
            f"chain BROKEN at seq {report.first_bad_seq} [{report.kind}]{where}: {report.reason}", fg="red"
        )
    elif checked is not None and not checked.ok:
        click.secho(f"log FAILED the checkpoint check ({checked.finding}): {checked.detail}", fg="red")
        click.echo(
            f"note: {note}; the hash chain alone is self-consistent ({report.events} events), "
            "as a cut or re-hashed log is"
        )
    else:
        click.secho(f"chain verified: {report.events} events, head {report.head_hash}", fg="green")
        if checked is not None:
            click.secho(f"checkpoint verified: {checked.detail} ({note})", fg="green")
        else:
            click.echo("no checkpoint yet: `leviathan events checkpoint` signs one, so truncation shows too")
        _echo_snapshots(snapshots)
    if not report.ok or (checked is not None and not checked.ok) or forged:
        raise SystemExit(1)


def _snapshot_row(check: SnapshotCheck) -> dict[str, object]:
    key = check.key
    return {"projection": key.projection, "seq": key.seq, "where": check.where, "problem": check.problem}


def _echo_snapshots(checks: list[SnapshotCheck]) -> None:
    good = [c for c in checks if c.ok]
    if good:
        click.secho(f"projection snapshots verified by refolding: {len(good)}", fg="green")
    for check in checks:
        if check.ok:
            continue
        # A forged state is an alarm; a stale or torn snapshot is only ignored by every reader.
        color = "red" if check.problem == DIFFERS else "yellow"
        click.secho(f"projection snapshot {check.where}: {check.problem} (safe to delete)", fg=color)


for _command in EVENTS_COMMANDS:
    events.add_command(_command)
for _command in TRANSFER_COMMANDS:
    events.add_command(_command)

COMMANDS = [events]
