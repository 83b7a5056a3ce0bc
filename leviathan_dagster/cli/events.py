"""``leviathan events tail|verify``."""

from __future__ import annotations

import json
from collections import deque

import click

from leviathan_dagster.cli.context import CliContext, emit_json, pass_ctx
from leviathan_dagster.cli.events_proofs import EVENTS_COMMANDS, verify_checkpoint
from leviathan_dagster.cli.events_transfer import TRANSFER_COMMANDS


@click.group()
def events() -> None:
    """Read and verify the hash-chained event log."""


@events.command()
@click.option("-n", "--lines", default=20, show_default=True, help="How many of the last events.")
@click.option("--type", "event_type", help="Only events of this type, e.g. attempt.failed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (NDJSON).")
@pass_ctx
def tail(ctx: CliContext, lines: int, event_type: str | None, as_json: bool) -> None:
    """Show the last events.

    \b
    Example:
      leviathan events tail -n 50 --type attempt.failed
    """
    last = deque((e for e in ctx.event_log().read() if event_type in (None, e.event_type)), maxlen=lines)
    for stored in last:
        if as_json:
            click.echo(json.dumps(stored.to_dict(), sort_keys=True))
        else:
            p = stored.payload
            subject = p.get("attempt_id") or p.get("task_id") or p.get("pr_number") or ""
            extra = p.get("failure_type") or p.get("pr_url") or p.get("status") or ""
            click.echo(f"{stored.seq:>6} {stored.event.timestamp} {stored.event_type:<18} {subject} {extra}")


@events.command()
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Also check the log against this signed checkpoint (detects truncation and re-hashing).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@pass_ctx
def verify(ctx: CliContext, checkpoint_file: str | None, as_json: bool) -> None:
    """Re-hash the whole chain; exit 1 and name the first bad seq if anything was changed.

    \b
    Example:
      leviathan events verify
      leviathan events verify --checkpoint ~/.leviathan/checkpoints/latest.note
    """
    report = ctx.event_log().verify()
    checked = (
        verify_checkpoint(ctx, checkpoint_file, as_json=as_json, exit_on_failure=False)
        if (checkpoint_file and report.ok)
        else None
    )
    if as_json:
        emit_json({**report.__dict__, "checkpoint": checked.to_dict() if checked else None})
    elif report.ok:
        click.secho(f"chain verified: {report.events} events, head {report.head_hash}", fg="green")
    else:
        click.secho(f"chain BROKEN at seq {report.first_bad_seq}: {report.reason}", fg="red")
    if not report.ok or (checked is not None and not checked.ok):
        raise SystemExit(1)


for _command in EVENTS_COMMANDS:
    events.add_command(_command)
for _command in TRANSFER_COMMANDS:
    events.add_command(_command)

COMMANDS = [events]
