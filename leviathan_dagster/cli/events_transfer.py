"""``leviathan events export|import``: move a whole log between backends, verified before any write."""

from __future__ import annotations

import os
from pathlib import Path

import click

from leviathan_dagster.cli.context import CliContext, emit_json, pass_ctx
from leviathan_dagster.core.config.event_log import DEFAULT_DSN_ENV
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.errors import ConfigError, EventLogCorrupted
from leviathan_dagster.core.events.checkpoint import NoteVerifier
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.events.proofs import load_verifier
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.events.transfer import ImportRefused, export_events, verify_export
from leviathan_dagster.core.models import EventLogSettings


def _progress(phase: str, done: int, total: int | None) -> None:
    of = f" of {total:,}" if total is not None else ""
    click.echo(f"{phase}: {done:,}{of} events", err=True)


@click.command()
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the export here (default: standard output).",
)
@pass_ctx
def export(ctx: CliContext, out_path: str | None) -> None:
    """Export the whole configured log (leviathan-export/v1 NDJSON: a header with count, head hash
    and Merkle root, then one line per event with its canonical bytes). Exit 1 if the chain is broken.

    \b
    Example:
      leviathan events export --out events.export.ndjson
      leviathan events export | gzip > events.export.ndjson.gz
    """
    store = ctx.event_log(read_only=True)
    try:
        if out_path is None:
            with click.open_file("-", "wb") as stdout:  # binary standard output, left open
                report = export_events(store, stdout, progress=_progress)
        else:
            # Written beside the target and renamed over it: a failed export leaves no half file.
            path = Path(out_path)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                with tmp.open("wb") as handle:
                    report = export_events(store, handle, progress=_progress)
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
    except EventLogCorrupted as exc:
        click.secho(f"export REFUSED: {exc}", fg="red", err=True)
        raise SystemExit(1) from None
    finally:
        _close(store)
    click.echo(
        f"exported {report.events} events of log {report.log_id}: head {report.head_hash}, "
        f"Merkle root {report.merkle_root}" + (f", to {out_path}" if out_path else ""),
        err=True,
    )


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Also require this signed checkpoint to verify and to match the first events of the export.",
)
@click.option(
    "--verifier-key",
    help="Verifier key (or a file holding it) of the checkpoint's signer. "
    "[default: <home>/keys/checkpoint.pub]",
)
@click.option(
    "--to",
    "target",
    metavar="ndjson:PATH|postgres",
    help=f"Import into a new NDJSON log at PATH, or into PostgreSQL (DSN from ${DEFAULT_DSN_ENV}). "
    "[default: the configured event log]",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@pass_ctx
def import_(
    ctx: CliContext,
    file: str,
    checkpoint_file: str | None,
    verifier_key: str | None,
    target: str | None,
    as_json: bool,
) -> None:
    """Import an export into an EMPTY log under the export's log_id. The whole file (every hash, the
    canonical bytes, count, head, Merkle root, and the checkpoint if given) is verified first; exit 1
    naming the bad seq, with nothing written, if anything fails. FILE may be - for standard input.

    \b
    Example:
      leviathan events import events.export.ndjson --to postgres
      leviathan events import events.export.ndjson --to ndjson:/srv/leviathan/events.ndjson \\
          --checkpoint latest.note --verifier-key leviathan+1a2b3c4d+AXx...
    """
    note = _read_text(checkpoint_file) if checkpoint_file else None
    verifier = _verifier(ctx, verifier_key) if note is not None else None
    try:
        with (
            click.open_file(file, "rb") as source,
            verify_export(source, checkpoint_note=note, verifier=verifier, progress=_progress) as verified,
        ):
            # Opened only now: a bad export must not even create the target's file or tables.
            store = _open_target(ctx, target, verified.header.log_id)
            try:
                report = verified.commit(store, progress=_progress)
            finally:
                _close(store)
    except ImportRefused as exc:
        click.secho(str(exc), fg="red", err=True)
        raise SystemExit(1) from None
    if as_json:
        emit_json(report.to_dict())
        return
    checked = f", checkpoint of {report.checkpoint_size} events verified" if note is not None else ""
    click.secho(
        f"imported {report.events} events of log {report.log_id} into {report.target} in "
        f"{report.bundles} bundles: head {report.head_hash}, Merkle root {report.merkle_root}{checked}",
        fg="green",
    )


def _open_target(ctx: CliContext, target: str | None, log_id: str) -> EventStore:
    """The log to import into, opened (created if new) under the export's ``log_id``."""
    settings = (
        load_project_config(ctx.config_path, isolate_targets=True).event_log
        if ctx.config_path.exists()
        else EventLogSettings()
    )
    if target is None:
        backend = settings.backend
        path = Path(settings.path) if settings.path else ctx.home.events_path
    elif target.startswith("ndjson:") and len(target) > len("ndjson:"):
        backend, path = "ndjson", Path(target.removeprefix("ndjson:"))
    elif target == "postgres":
        backend, path = "postgres", None
    else:
        raise ConfigError(f"--to {target!r}: expected ndjson:PATH or postgres")
    if backend == "ndjson":
        assert path is not None
        return NdjsonEventLog(path, log_id=log_id)
    if backend != "postgres":
        raise ConfigError(f"event_log.backend {backend!r} cannot be imported into; use --to")
    # psycopg is loaded only when PostgreSQL is the target.
    from leviathan_dagster.core.events.postgres.store import PostgresEventLog

    dsn_env = (settings.dsn_env if target is None else None) or DEFAULT_DSN_ENV
    dsn = os.environ.get(dsn_env)
    if not dsn:
        raise ConfigError(
            f"importing into PostgreSQL needs a DSN in ${dsn_env}. "
            f"Fix: export {dsn_env}=postgresql://USER:PASSWORD@HOST:5432/DATABASE."
        )
    prefix = settings.table_prefix if settings.backend == "postgres" else EventLogSettings.table_prefix
    return PostgresEventLog(dsn, log_id=log_id, table_prefix=prefix)


def _verifier(ctx: CliContext, key: str | None) -> NoteVerifier:
    if key is None:
        return load_verifier(ctx.home)
    return NoteVerifier.from_key(_read_text(key) if Path(key).is_file() else key)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


def _close(store: EventStore) -> None:
    close = getattr(store, "close", None)
    if callable(close):
        close()


TRANSFER_COMMANDS = [export, import_]
