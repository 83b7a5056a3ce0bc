"""``leviathan target pause|resume|reset-breaker``: the operator actions that need no Dagster run, for
scripts and terminals. Each writes the same event as its Dagster job (``pause_target_job`` …), with
the operator's identity."""

from __future__ import annotations

import getpass

import click

from leviathan_dagster.cli.context import CliContext, check_target_option, emit_json, pass_ctx
from leviathan_dagster.core import operator as op_events
from leviathan_dagster.core.config import load_project_config

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

COMMANDS = [target]
