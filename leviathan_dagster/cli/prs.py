"""``leviathan prs list|show|merge|close`` for the local forge (the reviewer's side)."""

from __future__ import annotations

import click

from leviathan_dagster.cli.context import CliContext, emit_json, pass_ctx
from leviathan_dagster.core import pr_actions
from leviathan_dagster.core.config import load_project_config
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.forge.base import Forge
from leviathan_dagster.core.forge.registry import forge_for


def _forges(ctx: CliContext, target: str | None) -> list[Forge]:
    project = load_project_config(ctx.config_path)
    targets = [t for t in project.targets if target in (None, t.id)]
    if target and not targets:
        raise ConfigError(f"no target '{target}' in {project.source}")
    return [forge_for(t, ctx.home) for t in targets]


def _one_forge(ctx: CliContext, target: str | None) -> Forge:
    forges = _forges(ctx, target)
    if len(forges) != 1:
        raise click.UsageError("several targets: name one with --target")
    return forges[0]


@click.group()
def prs() -> None:
    """Pull requests Leviathan opened (local forge)."""


@prs.command("list")
@click.option("--target", help="Only this target.")
@click.option(
    "--state", type=click.Choice(["open", "merged", "closed", "all"]), default="all", show_default=True
)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def list_prs(ctx: CliContext, target: str | None, state: str, as_json: bool) -> None:
    """List pull requests.

    \b
    Example:
      leviathan prs list --state open
    """
    rows = [pr for forge in _forges(ctx, target) for pr in forge.list_pull_requests(state)]
    if as_json:
        emit_json([pr.__dict__ for pr in rows])
        return
    for pr in rows:
        click.echo(f"{pr.target_id:<14} #{pr.number:<4} {pr.state:<7} {pr.head:<48} {pr.title}")
    if not rows:
        click.echo("no pull requests")


@prs.command()
@click.argument("number", type=int)
@click.option("--target", help="Target of the PR (needed with several targets).")
@pass_ctx
def show(ctx: CliContext, number: int, target: str | None) -> None:
    """Show one pull request with its body.

    \b
    Example:
      leviathan prs show 1 --target docs-site
    """
    pr = _one_forge(ctx, target).get_pull_request(number)
    click.echo(f"#{pr.number} {pr.title}\n{pr.url}\n{pr.head} -> {pr.base} ({pr.state})\n\n{pr.body}")


@prs.command()
@click.argument("number", type=int)
@click.option("--target", help="Target of the PR (needed with several targets).")
@pass_ctx
def merge(ctx: CliContext, number: int, target: str | None) -> None:
    """Merge a PR into its base branch (really merges); completes its task.

    \b
    Example:
      leviathan prs merge 1 --target docs-site
    """
    pr = pr_actions.merge_pull_request(_one_forge(ctx, target), number, ctx.event_log())
    click.echo(f"merged #{pr.number} into {pr.base} ({pr.merge_commit_sha})")


@prs.command()
@click.argument("number", type=int)
@click.option("--target", help="Target of the PR (needed with several targets).")
@pass_ctx
def close(ctx: CliContext, number: int, target: str | None) -> None:
    """Close a PR without merging.

    \b
    Example:
      leviathan prs close 2 --target docs-site
    """
    pr = pr_actions.close_pull_request(_one_forge(ctx, target), number, ctx.event_log())
    click.echo(f"closed #{pr.number}")


COMMANDS = [prs]
