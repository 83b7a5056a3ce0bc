"""``leviathan init`` and ``leviathan validate``."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import click

from leviathan_dagster.cli.context import CliContext, emit_json, pass_ctx
from leviathan_dagster.core.backlog.document import load_backlog
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.errors import BacklogError
from leviathan_dagster.core.git import commands as gitutil
from leviathan_dagster.core.models import BACKLOG_PATH
from leviathan_dagster.core.sandbox import sandbox_problem
from leviathan_dagster.core.scheduling.cycle import read_backlog

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


CONFIG_TEMPLATE = """\
# Leviathan's project config: the targets it works on and each target's policy.
# Every key is documented in docs/config.md; `leviathan validate` checks this file.
max_concurrent_attempts: 1
targets:
  - id: {target_id}
    repo_url: {repo_url}      # local path or file:// URL (the local forge); https://... for forge: github
    branch: {branch}
    forge: local
    executor: local            # local (a subprocess), k8s (a worker Job per attempt)
    test_command: ["python", "-m", "pytest"]
    policy:
      allowed_path_prefixes: [".leviathan/", "docs/", "tests/"]
      max_open_prs: 1
      max_running_attempts: 1
      max_attempts_per_task: 2
      backoff_seconds: 300
      circuit_breaker_failures: 3
      attempt_timeout_seconds: 900
"""


def _target_id(repo: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", repo.resolve().name).strip("-.")
    return name or "target"


def _write_starter_config(config_path: Path, repo: Path) -> None:
    branch = gitutil.current_branch(repo) if (repo / ".git").exists() or (repo / "HEAD").exists() else None
    try:
        repo_url = os.path.relpath(repo.resolve(), config_path.resolve().parent)
    except ValueError:  # another drive (Windows): keep it absolute
        repo_url = str(repo.resolve())
    config_path.write_text(
        CONFIG_TEMPLATE.format(target_id=_target_id(repo), repo_url=repo_url, branch=branch or "main"),
        encoding="utf-8",
    )


@click.command()
@click.argument("repo", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option(
    "--write-config/--no-write-config",
    default=None,
    help="Also write a starter leviathan.yaml (the --config path) for this repository. "
    "Asked interactively when omitted; never overwrites.",
)
@pass_ctx
def init(ctx: CliContext, repo: Path, write_config: bool | None) -> None:
    """Scaffold .leviathan/backlog.yaml in a target repository, and offer a starter leviathan.yaml.

    Neither file is ever overwritten.

    \b
    Example:
      leviathan init ../my-service
      leviathan --config leviathan.yaml init ../my-service --write-config
    """
    path = repo / BACKLOG_PATH
    if path.exists():
        raise click.ClickException(f"{path} already exists; edit it instead")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BACKLOG_TEMPLATE, encoding="utf-8")
    click.echo(f"created {path}: set `ready: true` on a task, commit it, then `leviathan run --once`")
    config = ctx.config_path
    if config.exists():
        if write_config:
            raise click.ClickException(f"{config} already exists; add the target to it instead")
        return
    if write_config is None:
        interactive = sys.stdin.isatty()
        write_config = interactive and click.confirm(f"write a starter {config} for {repo}?", default=True)
        if not interactive:
            click.echo(f"no {config} yet: run again with --write-config to write a starter one")
    if write_config:
        _write_starter_config(config, repo)
        click.echo(f"created {config}: review the policy, then `leviathan validate`")


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
