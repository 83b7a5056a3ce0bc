"""``leviathan target pause|resume|reset-breaker`` and ``leviathan task clear-escalation``: the operator
actions that need no Dagster run, for scripts and terminals. Each writes the same event as its Dagster
job (``pause_target_job``, ``clear_escalation_job`` …), with the operator's identity."""

from __future__ import annotations

import getpass

import click

from leviathan_dagster.cli.context import CliContext, check_target_option, emit_json, pass_ctx
from leviathan_dagster.core.attempts import operator as op_events
from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.errors import ConfigError

ACTIONS = {
    "pause": op_events.TARGET_PAUSED,
    "resume": op_events.TARGET_RESUMED,
    "reset-breaker": op_events.CIRCUIT_RESET,
}


@click.group()
def target() -> None:
    """Operator actions on one target (recorded in the event log with your identity)."""


def _action(name: str, kind: str) -> click.Command:
    @click.argument("target_id", metavar="TARGET")
    @click.option("--reason", default="", help="Why; recorded with the event.")
    @click.option(
        "--operator",
        default=getpass.getuser,
        show_default="your login name",
        help="Who acts; recorded as actor operator:<name>.",
    )
    @click.option("--json", "as_json", is_flag=True, help="The recorded event as JSON.")
    @pass_ctx
    def command(ctx: CliContext, target_id: str, reason: str, operator: str, as_json: bool) -> None:
        # An operator can pause, resume or reset any target, a broken one included.
        project = load_project_config(ctx.config_path, isolate_targets=True)
        check_target_option(project, target_id)
        event = op_events.operator_event(kind, operator, target_id=target_id, reason=reason)
        stored = ctx.event_log().append_one(event)
        if as_json:
            emit_json(stored.to_dict())
        else:
            click.echo(f"{kind} for target '{target_id}' by {event.actor_id} (seq {stored.seq})")

    summary = op_events.TARGET_ACTION_SUMMARIES[kind]
    command.__doc__ = f"{summary}\n\n\\b\nExample:\n  leviathan target {name} docs-site --reason 'flaky CI'"
    return target.command(name)(command)


for _name, _kind in ACTIONS.items():
    _action(_name, _kind)


@click.group()
def task() -> None:
    """Operator actions on one task (recorded in the event log with your identity)."""


@task.command("clear-escalation")
@click.argument("target_id", metavar="TARGET")
@click.argument("task_id", metavar="TASK")
@click.option("--reason", default="", help="Why (e.g. what you fixed); recorded with the event.")
@click.option(
    "--operator",
    default=getpass.getuser,
    show_default="your login name",
    help="Who acts; recorded as actor operator:<name>.",
)
@click.option("--json", "as_json", is_flag=True, help="The recorded event as JSON.")
@pass_ctx
def clear_escalation(
    ctx: CliContext, target_id: str, task_id: str, reason: str, operator: str, as_json: bool
) -> None:
    """Give an escalated (or out-of-attempts) task a fresh attempt budget, after fixing it on main.

    Records task.escalation_cleared: the task's earlier attempts no longer count against
    max_attempts_per_task, escalation_after, the infrastructure streak or the backoff; they stay in the
    history and the next attempt takes the next number. Refused (exit 2) while an attempt is in flight
    or when the task is neither escalated nor out of attempts.

    \b
    Example:
      leviathan task clear-escalation docs-site write-guide --reason 'criteria fixed in #42'
    """
    project = load_project_config(ctx.config_path)
    config = project.target(target_id)
    if config is None:
        raise ConfigError(f"no target '{target_id}' in {project.source}")
    store = ctx.event_log()
    event = op_events.clear_escalation_event(
        config, AttemptLedger.from_events(store.read()), task_id, operator, reason
    )
    stored = store.append_one(event)
    if as_json:
        emit_json(stored.to_dict())
    else:
        click.echo(
            f"{event.event_type} for {target_id}/{task_id} ({event.payload['cleared']}) by "
            f"{event.actor_id} (seq {stored.seq}): its next attempt starts a fresh budget"
        )


COMMANDS = [target, task]
