"""Delivery: the event log itself (with its integrity check), the daily delivery metrics and costs."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta

import dagster as dg

from leviathan_dagster.core.events.health import check_event_log
from leviathan_dagster.core.generators.usage import TOKEN_FIELDS
from leviathan_dagster.core.projections.costs import COST_HEADERS, TargetDayCost, cost_table_rows, sum_costs
from leviathan_dagster.core.projections.log_view import LogView, view_of
from leviathan_dagster.core.projections.metrics import METRICS_HEADERS, metrics_table_rows
from leviathan_dagster.core.reporting import markdown_table
from leviathan_dagster.defs.delivery.partitions import daily_partitions
from leviathan_dagster.defs.platform.resources import LeviathanResource

EVENT_LOG_VERIFIES = "event_log_verifies"


@dg.asset(
    group_name="delivery",
    kinds={"python"},
    owners=["team:leviathan"],
    tags={"domain": "delivery"},
    description="The hash-chained audit log of every lifecycle event: its size and head.",
)
def event_log(leviathan: LeviathanResource) -> dg.MaterializeResult:
    store = leviathan.event_log()
    seq, head = store.head()
    return dg.MaterializeResult(metadata={"events": seq, "head_hash": head, "backend": type(store).__name__})


@dg.asset_check(
    asset=event_log,
    name=EVENT_LOG_VERIFIES,
    description="Re-hashes the whole chain, and checks it against the newest signed checkpoint if any.",
)
def event_log_verifies(leviathan: LeviathanResource) -> dg.AssetCheckResult:
    health = check_event_log(leviathan.event_log(), leviathan.leviathan_home())
    return dg.AssetCheckResult(
        passed=health.ok,
        severity=dg.AssetCheckSeverity.ERROR,
        description=health.summary,
        metadata={k: v if v is not None else "" for k, v in health.details.items()},
    )


@contextmanager
def folded(leviathan: LeviathanResource, projection: str) -> Iterator[LogView]:
    """The process's view of the log with ``projection`` folded up to now, held under its lock."""
    view = view_of(leviathan.event_log())
    with view.lock:
        view.require(projection)
        view.refresh()
        yield view


# The daily figures folded from the event log: one partition per UTC day, computed by one job.
DAILY_FROM_THE_LOG = {
    "partitions_def": daily_partitions,
    "group_name": "delivery",
    "deps": [event_log],
    "kinds": {"python"},
    "owners": ["team:leviathan"],
    "tags": {"domain": "delivery"},
}


@dg.asset(
    **DAILY_FROM_THE_LOG,
    description=(
        "Per target and UTC day: attempts, success rate, failures by type, PRs opened/merged/closed, time "
        "to merge, attempts and tokens per merged PR. Is Leviathan worth running?"
    ),
)
def delivery_metrics(context: dg.AssetExecutionContext, leviathan: LeviathanResource) -> dg.MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    with folded(leviathan, "metrics") as view:
        metrics = view.metrics.metrics_for(day)
    totals = {
        "attempts": sum(m.attempts for m in metrics.values()),
        "prs_merged": sum(m.prs_merged for m in metrics.values()),
    }
    return dg.MaterializeResult(
        metadata={
            **totals,
            "per_target": dg.MetadataValue.md(markdown_table(METRICS_HEADERS, metrics_table_rows(metrics))),
            "metrics": dg.MetadataValue.json({t: m.as_dict() for t, m in metrics.items()}),
        }
    )


# How many days the costs table looks back (the partition's day included): the trend beside the day.
COST_TREND_DAYS = 14


@dg.asset(
    **DAILY_FROM_THE_LOG,
    description=(
        "What attempts cost per target and UTC day: attempts by generator, model calls, input, output "
        "and cache tokens, USD at list prices. The totals are plotted per day (Overview, Metadata, Plots)."
    ),
)
def costs(context: dg.AssetExecutionContext, leviathan: LeviathanResource) -> dg.MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    with folded(leviathan, "costs") as view:
        by_target = view.costs.costs_for(day)
        trend = view.costs.days(day - timedelta(days=COST_TREND_DAYS - 1), day)
    # Every configured target has its row (zero on an idle day), so its per-target plot has no gaps.
    for target_id in (t.id for t in leviathan.project().targets):
        by_target.setdefault(target_id, TargetDayCost(target_id, day.isoformat()))
    rows = [by_target[t] for t in sorted(by_target)]
    return dg.MaterializeResult(metadata=cost_metadata(rows, trend))


def cost_metadata(rows: list[TargetDayCost], trend: list[TargetDayCost]) -> dict[str, object]:
    """The day's totals as numbers (what Dagster plots, one point per day partition), per target too,
    and the tables: the day per target, and the days before it."""
    total = sum_costs(rows)
    metadata: dict[str, object] = {
        "attempts": dg.MetadataValue.int(total.attempts),
        "model_calls": dg.MetadataValue.int(total.model_calls),
        **{name: dg.MetadataValue.int(getattr(total, name)) for name in TOKEN_FIELDS},
        "total_tokens": dg.MetadataValue.int(total.total_tokens),
        "cost_usd": dg.MetadataValue.float(total.usd),
        "unpriced_attempts": dg.MetadataValue.int(total.unpriced_attempts),
        "unrecorded_attempts": dg.MetadataValue.int(total.unrecorded_attempts),
    }
    for row in rows:
        metadata[f"cost_usd [{row.target_id}]"] = dg.MetadataValue.float(row.usd)
        metadata[f"total_tokens [{row.target_id}]"] = dg.MetadataValue.int(row.total_tokens)
    metadata["per_target"] = dg.MetadataValue.md(markdown_table(COST_HEADERS, cost_table_rows(rows)))
    metadata["per_target_table"] = dg.MetadataValue.table(
        records=[dg.TableRecord(_table_record(row)) for row in rows], schema=COST_TABLE_SCHEMA
    )
    metadata[f"last_{COST_TREND_DAYS}_days"] = dg.MetadataValue.md(
        markdown_table(COST_HEADERS, cost_table_rows(trend))
    )
    metadata["costs"] = dg.MetadataValue.json([row.as_dict() for row in rows])
    return metadata


COST_TABLE_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("target", "string"),
        dg.TableColumn("attempts", "int"),
        dg.TableColumn("usd", "float"),
        dg.TableColumn("total_tokens", "int"),
        dg.TableColumn("model_calls", "int"),
        *(dg.TableColumn(name, "int") for name in TOKEN_FIELDS),
    ]
)


def _table_record(row: TargetDayCost) -> dict[str, str | int | float]:
    return {
        "target": row.target_id,
        "attempts": row.attempts,
        "usd": row.usd,
        "total_tokens": row.total_tokens,
        "model_calls": row.model_calls,
        **{name: getattr(row, name) for name in TOKEN_FIELDS},
    }
