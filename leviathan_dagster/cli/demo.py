"""``leviathan demo``: the whole loop on embedded defaults, from an empty home to verified PRs."""

from __future__ import annotations

import time

import click

from leviathan_dagster.cli.context import CliContext, pass_ctx
from leviathan_dagster.cli.run import cycle_attempts, open_cycles, print_attempts
from leviathan_dagster.core.attempts import pr_actions
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.events.model import parse_timestamp, utc_now
from leviathan_dagster.core.forge.registry import forge_for
from leviathan_dagster.core.projections.log_view import current_ledger
from leviathan_dagster.core.scheduling.cycle import plan_cycle
from leviathan_dagster.core.scheduling.readiness import BACKOFF
from leviathan_dagster.demo_setup import build_demo, fix_slugify_bug, prepare_demo_home

MAX_CYCLES = 20


@click.command()
@pass_ctx
def demo(ctx: CliContext) -> None:
    """Build two demo targets and run cycles until nothing is ready, merging PRs between cycles.

    Prints the PRs, the tasks that were skipped with their reasons, and the verified event chain.
    Safe to re-run: it starts from a fresh demo home each time.

    \b
    Example:
      leviathan --home .leviathan demo
    """
    home = ctx.home
    prepare_demo_home(home)
    ctx.config_path = build_demo(home)
    click.secho(f"demo home {home.root}; config {ctx.config_path}", bold=True)
    project = load_project_config(ctx.config_path)
    events = ctx.event_log()
    with open_cycles(ctx) as cycle:
        _run_cycles(ctx, project, events, cycle)
    _summary(ctx, project)


def _run_cycles(ctx: CliContext, project, events, cycle) -> None:
    home = ctx.home
    bug_fixed = False
    for number in range(1, MAX_CYCLES + 1):
        click.secho(f"\ncycle {number}", bold=True)
        report = cycle()
        print_attempts(cycle_attempts(ctx, {run_id for _, run_id, _ in report.launched}))
        ledger = current_ledger(events)
        if not bug_fixed and any(a.failure_type == "tests_failed" for a in ledger.attempts("docs-site")):
            sha = fix_slugify_bug(home)
            bug_fixed = True
            click.echo(f"  human: fixed textutil.slugify on docs-site main ({sha[:10]})")
        merged = _merge_open_prs(project, ctx)
        if report.launched or merged:
            continue
        wait = _seconds_until_backoff_ends(ctx, project)
        if wait is None:
            break
        click.echo(f"  waiting {wait:.1f}s for a retry backoff to end")
        time.sleep(wait)


def _merge_open_prs(project, ctx: CliContext) -> int:
    merged = 0
    for target in project.targets:
        forge = forge_for(target, ctx.home)
        for pr in forge.open_agent_pull_requests():
            pr_actions.merge_pull_request(target, forge, pr.number, ctx.event_log(), actor_id="demo-reviewer")
            click.echo(f"  reviewer: merged {target.id} PR #{pr.number} ({pr.head})")
            merged += 1
    return merged


def _seconds_until_backoff_ends(ctx: CliContext, project) -> float | None:
    plan = plan_cycle(project, ctx.home, ctx.event_log(), utc_now())
    ends = [
        parse_timestamp(r.not_before)
        for snap in plan.snapshots.values()
        for r in snap.readiness
        if r.reason == BACKOFF and r.not_before
    ]
    if not ends:
        return None
    return max(0.1, (min(ends) - utc_now()).total_seconds() + 0.2)


def _summary(ctx: CliContext, project) -> None:
    click.secho("\npull requests", bold=True)
    for target in project.targets:
        for pr in forge_for(target, ctx.home).list_pull_requests("all"):
            click.echo(f"  {target.id:<10} #{pr.number:<3} {pr.state:<7} {pr.head:<46} {pr.title}")
    click.secho("\ntasks not attempted now, with reasons", bold=True)
    plan = plan_cycle(project, ctx.home, ctx.event_log(), utc_now())
    for target_id, snap in plan.snapshots.items():
        for r in snap.readiness:
            if not r.ready:
                click.echo(f"  {target_id:<10} {r.task_id:<16} {r.reason:<14} {r.detail}")
    report = ctx.event_log().verify()
    colour = "green" if report.ok else "red"
    click.secho(
        f"\nevent chain: {'verified' if report.ok else 'BROKEN'}, {report.events} events, "
        f"head {report.head_hash}",
        fg=colour,
        bold=True,
    )
    click.echo("Open the Dagster UI on this instance with `make ui`.")
    if not report.ok:
        raise SystemExit(1)


COMMANDS = [demo]
