"""``leviathan run`` (scheduler cycles through Dagster) and ``leviathan tasks`` (readiness)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from leviathan_dagster.cli.context import (
    EXIT_TARGET_BROKEN,
    CliContext,
    check_target_option,
    emit_json,
    pass_ctx,
)
from leviathan_dagster.cli.graceful import GracefulStop
from leviathan_dagster.core.attempts.ledger import AttemptRecord
from leviathan_dagster.core.attempts.runner import CANCELED
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.events.schemas import Anomaly
from leviathan_dagster.core.projections.log_view import current_ledger
from leviathan_dagster.core.scheduling.cycle import CyclePlan, TargetSnapshot
from leviathan_dagster.core.scheduling.planning import RunView, plan_readiness

if TYPE_CHECKING:  # Dagster is imported only by the commands that run cycles
    from leviathan_dagster.cli.dagster_cycle import CycleReport


@contextlib.contextmanager
def open_cycles(
    ctx: CliContext, *, target: str | None = None, max_attempts: int | None = None
) -> Iterator[Callable[..., CycleReport]]:
    """The instance and its run queue, open for as many cycles as the caller runs (the code server
    starts once); yields ``cycle(executor=None, echo=click.echo, stop_requested=None)``, one cycle."""
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

            def cycle(*, executor: str | None = None, echo=click.echo, stop_requested=None) -> CycleReport:
                return run_cycle(
                    instance,
                    resource,
                    executor=executor,
                    echo=echo,
                    queue=queue,
                    stop_requested=stop_requested,
                )

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
    """Run scheduler cycles through Dagster: an attempt run per ready task.

    Runs are submitted to the run queue of the Dagster instance under <home>/dagster (visible with
    `make ui`) and waited for; without a running daemon this command takes them off the queue itself.
    Exit code 1 when an
    attempt of the (last) cycle failed or a target's backlog was broken (the other targets still ran);
    2 for an unknown --target.

    Without --once it runs until stopped: the first SIGINT (Ctrl-C) or SIGTERM starts nothing new,
    lets the attempt in flight be settled (Dagster interrupts it; it is recorded as canceled, an
    infrastructure failure that does not count against the task), prints one line saying what
    happened and exits 0; a second signal stops at once (exit 130 or 143).

    \b
    Example:
      leviathan run --target docs-site --once --executor local
      leviathan run --once --json | jq -r '.attempts[] | select(.status=="succeeded") | .pr_url'
    """
    check_target_option(load_project_config(ctx.config_path, isolate_targets=True), target)
    progress = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    with open_cycles(ctx, target=target, max_attempts=max_attempts) as cycle:
        if once:
            records, broken = _one_cycle(ctx, cycle, executor, as_json, progress)
            raise SystemExit(1 if broken or any(r.status != "succeeded" for r in records) else 0)
        with GracefulStop(announce=progress) as stop:
            interrupted: list[AttemptRecord] = []  # the attempts of the cycle a signal arrived in
            while not stop.poll():
                records, _ = _one_cycle(ctx, cycle, executor, as_json, progress, stop.poll)
                if stop.poll():
                    interrupted = records
                    break
                stop.sleep(interval)
            progress(stopped_line(stop.signal_name or "signal", interrupted))


def _one_cycle(ctx, cycle, executor, as_json, progress, stop_requested=None):
    """One cycle, printed; returns the attempts it ran and the targets it found broken."""
    progress(f"cycle at {utc_now():%H:%M:%S}")
    report = cycle(executor=executor, echo=progress, stop_requested=stop_requested)
    if report.skipped:
        progress(f"  {report.skipped}")
    records = cycle_attempts(ctx, {run_id for _, run_id, _ in report.launched})
    if as_json:
        line = {"skipped": report.skipped, "broken": report.broken, "attempts": [r.__dict__ for r in records]}
        click.echo(json.dumps(line))
    else:
        print_attempts(records)
    return records, report.broken


def stopped_line(signal_name: str, last_cycle: list[AttemptRecord]) -> str:
    """The one line ``run --interval`` prints when a signal stopped it: what became of the attempts
    the last cycle had in flight."""
    canceled = [
        r for r in last_cycle if r.status == "failed" and (r.error_summary or "").startswith(CANCELED)
    ]
    if canceled:
        names = ", ".join(f"{r.target_id}/{r.task_id} #{r.number} ({r.attempt_id})" for r in canceled)
        what = f"canceled {names}, recorded as {canceled[0].failure_type} (not counted against the task)"
    elif last_cycle:
        what = "the cycle's attempts had ended: " + ", ".join(
            f"{r.target_id}/{r.task_id} #{r.number} {r.status}" for r in last_cycle
        )
    else:
        what = "no attempt was in flight"
    return f"stopped on {signal_name}: {what}; nothing new started"


@click.command()
@click.option("--target", help="Only this target.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def tasks(ctx: CliContext, target: str | None, as_json: bool) -> None:
    """Show every task's readiness and the reason it is not ready.

    A target whose backlog or forge cannot be read is shown as broken, with the reason, and the others
    are shown as usual; the exit code is then 1. An unknown --target is exit code 2.

    \b
    Example:
      leviathan tasks --target docs-site
    """
    project = load_project_config(ctx.config_path, isolate_targets=True)
    check_target_option(project, target)
    # The scheduler's own judgement (attempt runs queued but not in the log yet included), so this
    # table never says "ready" where the scheduler is waiting on a run.
    with _home_runs(ctx) as runs:
        plan = plan_readiness(project, ctx.home, ctx.event_log(), utc_now(), runs, only_target=target)
    anomalies = _anomalies_by_target(plan)
    if as_json:
        emit_json(
            {
                tid: {
                    "error": snap.error if snap else plan.errors[tid],
                    "tasks": [r.as_row() for r in snap.readiness] if snap else [],
                    "anomalies": [asdict(a) for a in anomalies.pop(tid, [])],
                }
                for tid, snap in _by_target(plan).items()
            }
        )
    else:
        for tid, snap in _by_target(plan).items():
            click.secho(tid, bold=True)
            if snap is None or snap.error:
                click.secho(f"  broken: {plan.errors[tid]}", fg="red")
            for r in snap.readiness if snap else ():
                mark = click.style("ready", fg="green") if r.ready else click.style(r.reason, fg="yellow")
                click.echo(f"  {r.task_id:<24} {mark:<30} {'' if r.ready else r.detail}")
            for anomaly in anomalies.pop(tid, []):
                click.secho(f"  {_describe_anomaly(anomaly)}", fg="red")
    # Malformed events of no target shown here (none named, or one not in leviathan.yaml): on stderr,
    # so the table and the --json document keep their shape.
    for anomaly in (a for rest in anomalies.values() for a in rest):
        click.secho(_describe_anomaly(anomaly), fg="red", err=True)
    if plan.errors:
        raise SystemExit(EXIT_TARGET_BROKEN)


def _anomalies_by_target(plan: CyclePlan) -> dict[str | None, list[Anomaly]]:
    """The malformed events the ledger skipped (``core.events.schemas.fold_anomaly``), by target."""
    found: dict[str | None, list[Anomaly]] = {}
    for anomaly in plan.ledger.anomalies:
        found.setdefault(anomaly.target_id, []).append(anomaly)
    return found


def _describe_anomaly(anomaly: Anomaly) -> str:
    who = f"target {anomaly.target_id}" if anomaly.target_id else "no target"
    if anomaly.attempt_id:
        who += f", attempt {anomaly.attempt_id}"
    return (
        f"malformed event seq {anomaly.seq} ({anomaly.event_type}, {who}) not folded: {anomaly.problem}. "
        "Fix: never edit the log; record what really happened through an operator action "
        "(docs/operations-runbook.md, After a fault)"
    )


def _home_runs(ctx: CliContext) -> contextlib.AbstractContextManager[RunView | None]:
    """The attempt runs of the home's Dagster instance (None: there is none, so nothing can be queued);
    Dagster is imported only when there is one."""
    if not (ctx.home.dagster_home / "dagster.yaml").exists():
        return contextlib.nullcontext(None)
    from leviathan_dagster.cli.dagster_cycle import home_run_view

    return home_run_view(ctx.home)


def _by_target(plan: CyclePlan) -> dict[str, TargetSnapshot | None]:
    """Every target's snapshot, and None for one whose config is invalid (it has only an error)."""
    return {**plan.snapshots, **{tid: None for tid in plan.errors if tid not in plan.snapshots}}


COMMANDS = [run, tasks]
