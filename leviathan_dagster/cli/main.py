"""The ``leviathan`` command line. Exit codes: 0 ok, 1 the thing checked is bad (invalid backlog,
broken chain, failed attempt), 2 usage or configuration error."""

from __future__ import annotations

import errno
import sys

import click

from leviathan_dagster.cli.context import CliContext
from leviathan_dagster.core.errors import LeviathanError
from leviathan_dagster.core.home import resolve_config_path, resolve_home


class LeviathanGroup(click.Group):
    """Turns Leviathan's own errors into one clear line and exit code 2, never a traceback; so too a
    full disk and a failing database under Dagster's storage (the operator's to fix, not a bug)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LeviathanError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)
        except Exception as exc:
            message = storage_failure(exc)
            if message is None:
                raise
            click.secho(f"error: {message}", fg="red", err=True)
            sys.exit(2)


def storage_failure(exc: BaseException) -> str | None:
    """One line for a disk or database failure (anywhere in the exception's chain), else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return f"disk full: {seen}. Fix: free space under the Leviathan and Dagster homes, then rerun."
        module = type(seen).__module__
        if module.startswith(("sqlalchemy", "sqlite3", "psycopg")) and "Error" in type(seen).__name__:
            first = str(seen).strip().splitlines()[0] if str(seen).strip() else type(seen).__name__
            full = "full" in first.lower()
            fix = "free disk space" if full else "check that the database is up and reachable"
            return f"Dagster's storage failed ({type(seen).__name__}: {first[:300]}). Fix: {fix}, then rerun."
        seen = seen.__cause__ or seen.__context__
    return None


@click.group(cls=LeviathanGroup)
@click.option(
    "--config",
    "config_path",
    envvar="LEVIATHAN_CONFIG",
    type=click.Path(dir_okay=False),
    help="Project config with targets and policy. [env LEVIATHAN_CONFIG; default ./leviathan.yaml]",
)
@click.option(
    "--home",
    envvar="LEVIATHAN_HOME",
    type=click.Path(file_okay=False),
    help="State folder: event log, forge, artifacts. [env LEVIATHAN_HOME; default ~/.leviathan]",
)
@click.version_option(package_name="leviathan-dagster")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, home: str | None) -> None:
    """Leviathan: runs a human-curated backlog as pull requests, inside policy, with an audit log.

    \b
    Example:
      leviathan validate
      leviathan run --once
      leviathan prs list
      leviathan events verify
    """
    ctx.obj = CliContext(config_path=resolve_config_path(config_path), home=resolve_home(home))


def _register() -> None:
    from leviathan_dagster.cli import control_plane, costs, demo, events, project, prs, run, targets

    for module in (project, run, events, prs, costs, targets, control_plane, demo):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()
