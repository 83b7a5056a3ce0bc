"""``leviathan init`` and ``leviathan validate``."""

from __future__ import annotations

from pathlib import Path

import click

from leviathan_dagster.cli.context import CliContext, emit_json, pass_ctx
from leviathan_dagster.core.backlog import load_backlog
from leviathan_dagster.core.config import load_project_config
from leviathan_dagster.core.errors import BacklogError
from leviathan_dagster.core.models import BACKLOG_PATH
from leviathan_dagster.core.sandbox import sandbox_problem
from leviathan_dagster.core.scheduling import read_backlog

BACKLOG_TEMPLATE = """\
# Leviathan backlog: humans plan here, Leviathan executes tasks with `ready: true` as pull requests.
# Required per task: id, title, ready, allowed_paths. See docs/backlog.md for every field.
tasks:
  - id: getting-started
    title: Write a getting-started guide
    description: How to install and run the project, for a first-time contributor.
    ready: false            # set to true when the task is ready to be attempted
    status: pending
    priority: 3             # 1 lowest .. 5 highest
    generator: docs         # docs | tests | claude (formerly `executor:`)
    allowed_paths:
      - docs/getting-started.md
    acceptance_criteria:
      - Explains installation
      - Shows the first command to run
    dependencies: []
"""


@click.command()
@click.argument("repo", type=click.Path(file_okay=False, path_type=Path), default=".")
def init(repo: Path) -> None:
    """Scaffold .leviathan/backlog.yaml in a target repository (never overwrites).

    \b
    Example:
      leviathan init ../my-service
    """
    path = repo / BACKLOG_PATH
    if path.exists():
        raise click.ClickException(f"{path} already exists; edit it instead")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BACKLOG_TEMPLATE, encoding="utf-8")
    click.echo(f"created {path}: set `ready: true` on a task, commit it, then `leviathan run --once`")


@click.command()
@click.option(
    "--backlog",
    "backlog_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Validate this backlog file only (no project config needed).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def validate(ctx: CliContext, backlog_file: Path | None, as_json: bool) -> None:
    """Validate leviathan.yaml and every target's backlog (on its base branch).

    Exit code 1 when anything is invalid; every problem is listed with file, line, field and fix.

    \b
    Example:
      leviathan validate
      leviathan validate --backlog .leviathan/backlog.yaml
    """
    results: dict[str, dict] = {}
    if backlog_file is not None:
        try:
            backlog = load_backlog(backlog_file)
            results[str(backlog_file)] = {
                "valid": True,
                "tasks": len(backlog.tasks),
                "warnings": list(backlog.warnings),
            }
        except BacklogError as exc:
            results[str(backlog_file)] = {"valid": False, "problems": exc.problems}
    else:
        project = load_project_config(ctx.config_path, isolate_targets=True)
        for warning in project.warnings:
            click.secho(f"warning: {warning}", fg="yellow", err=True)
        sandbox_warning = _sandbox_warning(project)
        if sandbox_warning:
            click.secho(f"warning: {sandbox_warning}", fg="yellow", err=True)
        # A target whose own config is invalid is reported like an invalid backlog; the others are checked.
        for target_id, problems in project.broken_targets:
            results[target_id] = {"valid": False, "problems": problems.splitlines()}
        for target in project.targets:
            snap = read_backlog(target, ctx.home)
            if snap.backlog is None:
                results[target.id] = {"valid": False, "problems": (snap.error or "").splitlines()}
            else:
                results[target.id] = {
                    "valid": True,
                    "tasks": len(snap.backlog.tasks),
                    "warnings": list(snap.backlog.warnings),
                }
    if as_json:
        emit_json(results)
    else:
        for name, result in results.items():
            if result["valid"]:
                click.secho(f"{name}: valid, {result['tasks']} tasks", fg="green")
                for warning in result["warnings"]:
                    click.secho(f"  warning: {warning}", fg="yellow")
            else:
                click.secho(f"{name}: INVALID", fg="red")
                for problem in result["problems"]:
                    click.echo(f"  {problem}")
    if not all(r["valid"] for r in results.values()):
        raise SystemExit(1)


def _sandbox_warning(project) -> str | None:
    """Why test commands cannot run here, when a target has one (its attempts would fail)."""
    with_tests = [target.id for target in project.targets if target.test_command]
    problem = sandbox_problem() if with_tests else None
    if problem is None:
        return None
    return (
        f"no sandbox for test commands on this machine: {problem}; attempts of {', '.join(with_tests)} "
        "will fail executor_error (test commands never run unsandboxed)"
    )


COMMANDS = [init, validate]
