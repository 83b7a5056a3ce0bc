"""What every ``leviathan`` subcommand shares: where config and state live, and JSON output."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import click

from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.errors import ConfigError, NotFoundError
from leviathan_dagster.core.events.registry import open_event_log
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import ProjectConfig

# Exit code of a command one of whose targets was broken (the others were still served).
EXIT_TARGET_BROKEN = 1


@dataclass
class CliContext:
    config_path: Path
    home: LeviathanHome
    # Targets a command found broken (reported already); commands that serve targets then exit 1.
    broken: set[str] = field(default_factory=set)

    def event_log(self, *, read_only: bool = False) -> EventStore:
        """The configured event log: leviathan.yaml's ``event_log`` when there is a config file,
        else the NDJSON log under the home (so ``events verify`` works without a project).

        ``read_only`` for commands that only read: they never create or repair anything, and a log
        that does not exist is a clear error (exit 2) instead of a fresh empty one."""
        settings = None
        if self.config_path.exists():
            # A command about the log goes on when one target's config is broken, and says so.
            project = load_project_config(self.config_path, isolate_targets=True)
            for target_id, problems in project.broken_targets:
                click.secho(
                    f"error: target '{target_id}' is left out, its config is invalid:", fg="red", err=True
                )
                click.echo(problems, err=True)
            settings = project.event_log
        try:
            return open_event_log(self.home, settings, read_only=read_only)
        except NotFoundError as exc:
            click.secho(str(exc), fg="red", err=True)
            raise SystemExit(2) from None


pass_ctx = click.make_pass_decorator(CliContext)


def check_target_option(project: ProjectConfig, target_id: str | None) -> None:
    """ConfigError (exit 2) when ``--target`` names no target of the config: printing nothing for a typo
    would look like a target without tasks."""
    known = {t.id for t in project.targets} | {tid for tid, _ in project.broken_targets}
    if target_id is not None and target_id not in known:
        available = ", ".join(t.id for t in project.targets) or "none"
        raise ConfigError(f"no target {target_id!r} in {project.source} (targets: {available})")


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
