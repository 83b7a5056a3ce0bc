"""``leviathan prs list|show|merge|close`` for the local forge (the reviewer's side)."""

from __future__ import annotations

import click

from leviathan_dagster.cli.context import (
    EXIT_TARGET_BROKEN,
    CliContext,
    check_target_option,
    emit_json,
    pass_ctx,
)
from leviathan_dagster.core.attempts import pr_actions
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.errors import ConfigError, LeviathanError
from leviathan_dagster.core.forge.base import Forge
from leviathan_dagster.core.forge.registry import forge_for
from leviathan_dagster.core.models import PullRequest, TargetConfig


def _targets(ctx: CliContext, target: str | None) -> list[TargetConfig]:
    """The targets to act on; those left out for an invalid config are reported (and in ``ctx.broken``)."""
    project = load_project_config(ctx.config_path, isolate_targets=True)
    if target is not None and project.broken_target(target):
        raise ConfigError(f"target '{target}' has an invalid config:\n{project.broken_target(target)}")
    check_target_option(project, target)
    for target_id, problems in project.broken_targets:
        click.secho(f"error: target '{target_id}' is left out, its config is invalid:", fg="red", err=True)
        click.echo(problems, err=True)
        ctx.broken.add(target_id)
    return [t for t in project.targets if target in (None, t.id)]


def _one_target(ctx: CliContext, target: str | None) -> tuple[TargetConfig, Forge]:
    targets = _targets(ctx, target)
    if len(targets) != 1:
        raise click.UsageError("several targets: name one with --target")
    return targets[0], forge_for(targets[0], ctx.home)


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
    rows: list[PullRequest] = []
    broken: dict[str, str] = {}
    # One target's forge failing (no token, unreachable) is reported for it; the others are listed.
    for t in _targets(ctx, target):
        try:
            rows += forge_for(t, ctx.home).list_pull_requests(state)
        except LeviathanError as exc:
            broken[t.id] = str(exc)
    for target_id, error in broken.items():
        click.secho(f"{target_id}: broken: {error}", fg="red", err=True)
    if as_json:
        emit_json([pr.__dict__ for pr in rows])
    else:
        for pr in rows:
            click.echo(f"{pr.target_id:<14} #{pr.number:<4} {pr.state:<7} {pr.head:<48} {pr.title}")
        if not rows:
            click.echo("no pull requests")
    if broken or ctx.broken:
        raise SystemExit(EXIT_TARGET_BROKEN)


def _pr_command(func):
    """The options every one-PR command takes: the PR number, its target, ``--json``."""
    func = click.option("--json", "as_json", is_flag=True, help="The pull request as JSON.")(func)
    func = click.option("--target", help="Target of the PR (needed with several targets).")(func)
    return click.argument("number", type=int)(func)


def _report(pr: PullRequest, as_json: bool, text: str) -> None:
    if as_json:
        emit_json(pr.__dict__)
    else:
        click.echo(text)


@prs.command()
@_pr_command
@click.option("--stat", "diff", flag_value="stat", help="Also the files changed (git diff --stat).")
@click.option("--patch", "diff", flag_value="patch", help="Also the whole diff (stat and patch).")
@pass_ctx
def show(ctx: CliContext, number: int, target: str | None, as_json: bool, diff: str | None) -> None:
    """Show one pull request with its body, and with --stat or --patch what it changes.

    \b
    Example:
      leviathan prs show 1 --target docs-site --patch
      leviathan prs show 1 --target docs-site --json | jq -r .url
    """
    forge = _one_target(ctx, target)[1]
    pr = forge.get_pull_request(number)
    text = f"#{pr.number} {pr.title}\n{pr.url}\n{pr.head} -> {pr.base} ({pr.state})\n\n{pr.body}"
    changes = None
    if diff:
        changes = forge.pull_request_diff(pr, cache_dir=ctx.home.mirrors, patch=diff == "patch")
        text += "\n\n" + changes
    if as_json:
        emit_json({**pr.__dict__, **({"diff": changes} if diff else {})})
    else:
        click.echo(text)


@prs.command()
@_pr_command
@pass_ctx
def merge(ctx: CliContext, number: int, target: str | None, as_json: bool) -> None:
    """Merge a PR into its base branch (really merges); completes its task.

    \b
    Example:
      leviathan prs merge 1 --target docs-site
    """
    pr = pr_actions.merge_pull_request(*_one_target(ctx, target), number, ctx.event_log())
    _report(pr, as_json, f"merged #{pr.number} into {pr.base} ({pr.merge_commit_sha})")


@prs.command()
@_pr_command
@pass_ctx
def close(ctx: CliContext, number: int, target: str | None, as_json: bool) -> None:
    """Close a PR without merging: its attempt fails as pr_closed (retry after backoff, or the task ends).

    \b
    Example:
      leviathan prs close 2 --target docs-site
    """
    pr = pr_actions.close_pull_request(*_one_target(ctx, target), number, ctx.event_log())
    _report(pr, as_json, f"closed #{pr.number}")


COMMANDS = [prs]
