"""``leviathan costs``: what attempts cost per target and UTC day, from the event log (the same figures
as the Dagster ``costs`` asset)."""

from __future__ import annotations

from datetime import date, timedelta

import click

from leviathan_dagster.cli.context import CliContext, check_target_option, emit_json, pass_ctx
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.projections.costs import COST_HEADERS, cost_table_rows, sum_costs, usd_cell
from leviathan_dagster.core.projections.log_view import view_of
from leviathan_dagster.core.reporting import markdown_table


@click.command()
@click.option(
    "--days", type=click.IntRange(min=1), default=7, show_default=True, help="Days back, today included."
)
@click.option(
    "--until",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="The last day (UTC, YYYY-MM-DD). [default: today]",
)
@click.option("--target", help="Only this target.")
@click.option("--json", "as_json", is_flag=True, help="One object per target and day.")
@pass_ctx
def costs(ctx: CliContext, days: int, until, target: str | None, as_json: bool) -> None:
    """Attempts, model calls, tokens and USD per target and UTC day.

    Counts the attempts that ended each day; the docs and tests generators cost zero. "unpriced":
    calls to a model without a list price (tokens counted, USD not); "unrecorded": attempts whose
    usage was never recorded.

    \b
    Example:
      leviathan costs --days 30
      leviathan costs --until 2026-11-30 --days 1 --target docs-site --json
    """
    if ctx.config_path.exists():
        check_target_option(load_project_config(ctx.config_path, isolate_targets=True), target)
    last = until.date() if until else utc_now().date()
    first = last - timedelta(days=days - 1)
    view = view_of(ctx.event_log(read_only=True))
    with view.lock:
        view.require("costs")
        view.refresh()
        rows = [r for r in view.costs.days(first, last) if target in (None, r.target_id)]
    if as_json:
        emit_json([row.as_dict() for row in rows])
        return
    if not rows:
        click.echo(f"no attempt ended between {first} and {last}")
        return
    click.echo(markdown_table(COST_HEADERS, cost_table_rows(rows)))
    total = sum_costs(rows)
    click.echo(
        f"\n{_span(first, last)}: {total.attempts} attempts, {total.total_tokens} tokens, {usd_cell(total)}"
    )


def _span(first: date, last: date) -> str:
    return str(last) if first == last else f"{first} .. {last}"


COMMANDS = [costs]
