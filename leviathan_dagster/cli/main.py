"""The ``leviathan`` command line. Exit codes: 0 ok, 1 the thing checked is bad (invalid backlog,
broken chain, failed attempt), 2 usage or configuration error."""

from __future__ import annotations

import sys

import click

from leviathan_dagster.cli.context import CliContext
from leviathan_dagster.core.errors import LeviathanError
from leviathan_dagster.core.home import resolve_config_path, resolve_home


class LeviathanGroup(click.Group):
    """Turns Leviathan's own errors into one clear line and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LeviathanError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)


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
    from leviathan_dagster.cli import control_plane, demo, events, project, prs, run, targets

    for module in (project, run, events, prs, targets, control_plane, demo):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()
