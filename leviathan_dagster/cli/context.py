"""What every ``leviathan`` subcommand shares: where config and state live, and JSON output."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import click

from leviathan_dagster.core.config import load_project_config
from leviathan_dagster.core.errors import NotFoundError
from leviathan_dagster.core.events.registry import open_event_log
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.home import LeviathanHome


@dataclass
class CliContext:
    config_path: Path
    home: LeviathanHome

    def event_log(self, *, read_only: bool = False) -> EventStore:
        """The configured event log: leviathan.yaml's ``event_log`` when there is a config file,
        else the NDJSON log under the home (so ``events verify`` works without a project).

        ``read_only`` for commands that only read: they never create or repair anything, and a log
        that does not exist is a clear error (exit 2) instead of a fresh empty one."""
        settings = load_project_config(self.config_path).event_log if self.config_path.exists() else None
        try:
            return open_event_log(self.home, settings, read_only=read_only)
        except NotFoundError as exc:
            click.secho(str(exc), fg="red", err=True)
            raise SystemExit(2) from None


pass_ctx = click.make_pass_decorator(CliContext)


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
