"""``leviathan run`` (scheduler cycles through Dagster) and ``leviathan tasks`` (readiness)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import click

from leviathan_dagster.cli.context import CliContext, emit_json, pass_ctx
from leviathan_dagster.core.attempts import AttemptRecord
from leviathan_dagster.core.config import load_project_config
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.projections.log_view import current_ledger
from leviathan_dagster.core.scheduling import plan_cycle

if TYPE_CHECKING:  # Dagster is imported only by the commands that run cycles
    from leviathan_dagster.cli.dagster_cycle import CycleReport


@contextlib.contextmanager
def open_cycles(
    ctx: CliContext, *, target: str | None = None, max_attempts: int | None = None
) -> Iterator[Callable[..., CycleReport]]:
    """The instance and its run queue, open for as many cycles as the caller runs (the code server
    starts once); yields ``cycle(executor=None, echo=click.echo)``, which runs one cycle."""
    from leviathan_dagster.cli.dagster_cycle import prepare_instance, run_cycle
    from leviathan_dagster.cli.run_queue import RunQueue
    from leviathan_dagster.defs.platform.resources import LeviathanResource

    instance = prepare_instance(ctx.home, ctx.config_path)
    resource = LeviathanResource(
        config_path=str(ctx.config_path),
        home=str(ctx.home.root),
        only_target=target,
        max_attempts_per_task=max_attempts,
    )
    try:
        with RunQueue(instance, config_path=resource.config_path, home=resource.home) as queue:

            def cycle(*, executor: str | None = None, echo=click.echo) -> CycleReport:
                return run_cycle(instance, resource, executor=executor, echo=echo, queue=queue)

            yield cycle
    finally:
        instance.dispose()


def cycle_attempts(ctx: CliContext, run_ids: set[str]) -> list[AttemptRecord]:
    """The attempts the cycle's runs made, from the event log."""
    ledger = current_ledger(ctx.event_log())
    return [record for record in ledger.attempts() if record.run_id in run_ids]


def print_attempts(records: list[AttemptRecord]) -> None:
    """Print the attempts the cycle ran, one line each."""
    for record in records:
        if record.status == "succeeded":
            click.secho(
                f"  ok   {record.target_id}/{record.task_id} #{record.number}: PR {record.pr_url}", fg="green"
            )
        else:
            click.secho(
                f"  FAIL {record.target_id}/{record.task_id} #{record.number}: {record.failure_type}: "
                f"{(record.error_summary or '')[:300]}",
                fg="red",
            )


@click.command()
@click.option("--target", help="Only this target (default: every target in leviathan.yaml).")
@click.option("--once", is_flag=True, help="Run one scheduler cycle and exit (like the seed's --once).")
@click.option(
    "--executor", type=click.Choice(["local", "k8s", "k8s-stub"]), help="Override the target's executor."
)
@click.option(
    "--max-attempts", type=click.IntRange(min=1), help="Override max_attempts_per_task for this run."
)
@click.option(
    "--interval",
    default=30,
    show_default=True,
    type=click.IntRange(min=1),
    help="Seconds between cycles without --once.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print each cycle's attempts as one JSON object per line; progress goes to stderr.",
)
@pass_ctx
def run(
    ctx: CliContext,
    target: str | None,
    once: bool,
    executor: str | None,
    max_attempts: int | None,
    interval: int,
    as_json: bool,
) -> None:
    """Run scheduler cycles through Dagster: refresh backlogs, then an attempt run per ready task.

    Runs are submitted to the run queue of the Dagster instance under <home>/dagster (visible with
    `make ui`) and waited for, under the instance's concurrency limits; without a running daemon this
    command takes them off the queue itself. Exit code 1 when an attempt of the (last) cycle failed.

    \b
    Example:
      leviathan run --target docs-site --once --executor local
      leviathan run --once --json | jq -r '.attempts[] | select(.status=="succeeded") | .pr_url'
    """
    progress = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    with open_cycles(ctx, target=target, max_attempts=max_attempts) as cycle:
        while True:
            progress(f"cycle at {utc_now():%H:%M:%S}")
            report = cycle(executor=executor, echo=progress)
            if report.skipped:
                progress(f"  {report.skipped}")
            records = cycle_attempts(ctx, {run_id for _, run_id, _ in report.launched})
            failed = sum(r.status != "succeeded" for r in records)
            if as_json:
                click.echo(json.dumps({"skipped": report.skipped, "attempts": [r.__dict__ for r in records]}))
            else:
                print_attempts(records)
            if once:
                raise SystemExit(1 if failed else 0)
            time.sleep(interval)


@click.command()
@click.option("--target", help="Only this target.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def tasks(ctx: CliContext, target: str | None, as_json: bool) -> None:
    """Show every task's readiness and the reason it is not ready.

    \b
    Example:
      leviathan tasks --target docs-site
    """
    project = load_project_config(ctx.config_path)
    plan = plan_cycle(project, ctx.home, ctx.event_log(), utc_now(), only_target=target)
    if as_json:
        emit_json(
            {
                tid: {"error": snap.error, "tasks": [r.as_row() for r in snap.readiness]}
                for tid, snap in plan.snapshots.items()
            }
        )
        return
    for tid, snap in plan.snapshots.items():
        click.secho(tid, bold=True)
        if snap.error:
            click.secho(f"  broken: {snap.error}", fg="red")
        for r in snap.readiness:
            mark = click.style("ready", fg="green") if r.ready else click.style(r.reason, fg="yellow")
            click.echo(f"  {r.task_id:<24} {mark:<30} {'' if r.ready else r.detail}")


COMMANDS = [run, tasks]
