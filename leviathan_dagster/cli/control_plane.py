"""``leviathan control-plane serve``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import click

from leviathan_dagster.cli.context import CliContext, pass_ctx
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.events.access import Principal, worker_key_from

TOKEN_ENV = "LEVIATHAN_CONTROL_PLANE_TOKEN"


@click.group("control-plane")
def control_plane() -> None:
    """Run the control plane API (event ingestion, graph, attempts, autonomy status)."""


@control_plane.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option(
    "--max-bundle-bytes",
    default=1_048_576,
    show_default=True,
    type=click.IntRange(min=1),
    help="Largest accepted ingest body.",
)
@click.option(
    "--max-clock-ahead",
    "max_clock_ahead",
    default=86_400,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seconds an event's times may be ahead of this server's clock (409 beyond).",
)
@pass_ctx
def serve(ctx: CliContext, host: str, port: int, max_bundle_bytes: int, max_clock_ahead: int) -> None:
    """Serve the API over this home's event log; clients send ``Authorization: Bearer <token>``.

    \b
    Example (the token comes from the environment, never the command line, where `ps` would show it):
      export LEVIATHAN_CONTROL_PLANE_TOKEN=$(openssl rand -hex 32)
      leviathan control-plane serve --port 8000
    """
    import uvicorn  # imported here: every other command starts faster without it

    from leviathan_dagster.control_plane import create_app

    tokens, worker_key = _named_tokens(ctx, os.environ)
    token = os.environ.get(TOKEN_ENV, "").strip() or None
    if not token and not tokens and not worker_key:
        raise ConfigError(
            f"{TOKEN_ENV} is not set and leviathan.yaml names no control_plane tokens; the control plane "
            f"refuses to start without one (e.g. export {TOKEN_ENV}=$(openssl rand -hex 32))"
        )
    app = create_app(
        ctx.event_log(),
        token=token,
        tokens=tokens,
        worker_key=worker_key,
        max_bundle_bytes=max_bundle_bytes,
        max_clock_ahead_seconds=max_clock_ahead,
        targets_status=lambda: _policies(ctx),
    )
    click.echo(f"control plane on http://{host}:{port} (events: {ctx.home.events_path})", err=True)
    uvicorn.run(app, host=host, port=port, log_level="info", ws="none", lifespan="off")


def _named_tokens(ctx: CliContext, environ: Mapping[str, str]) -> tuple[dict[str, Principal], bytes | None]:
    """The ``control_plane:`` tokens of leviathan.yaml, each read from its environment variable."""
    if not ctx.config_path.exists():
        return {}, None
    settings = load_project_config(ctx.config_path).control_plane
    tokens: dict[str, Principal] = {}
    for spec in settings.tokens:
        secret = environ.get(spec.secret_env, "").strip()
        if not secret:
            raise ConfigError(
                f"control_plane token {spec.name!r}: environment variable {spec.secret_env} is not set. "
                f"Fix: export {spec.secret_env}=$(openssl rand -hex 32)"
            )
        tokens[secret] = Principal(spec.name, spec.role)
    worker_key = worker_key_from(settings.worker_key_env, environ)
    return tokens, worker_key


def _policies(ctx: CliContext) -> Mapping[str, Mapping[str, Any]]:
    """Each configured target's policy limits, read on each status request so edits show up at once.
    Without a project config the status still comes from the log alone."""
    if not ctx.config_path.exists():
        return {}
    config = load_project_config(ctx.config_path, isolate_targets=True)
    return {
        target.id: {
            "circuit_breaker_failures": target.policy.circuit_breaker_failures,
            "max_open_prs": target.policy.max_open_prs,
            "max_running_attempts": target.policy.max_running_attempts,
            "max_attempts_per_task": target.policy.max_attempts_per_task,
        }
        for target in config.targets
    }


COMMANDS = [control_plane]
