"""Delivery: the event log itself (with its integrity check) and the daily delivery metrics."""

from datetime import date

import dagster as dg

from leviathan_dagster.core.events.health import check_event_log
from leviathan_dagster.core.projections.log_view import view_of
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


@dg.asset(
    partitions_def=daily_partitions,
    group_name="delivery",
    deps=[event_log],
    kinds={"python"},
    owners=["team:leviathan"],
    tags={"domain": "delivery"},
    description=(
        "Per target and UTC day: attempts, success rate, failures by type, PRs opened/merged/closed, time "
        "to merge, attempts and tokens per merged PR. Is Leviathan worth running?"
    ),
)
def delivery_metrics(context: dg.AssetExecutionContext, leviathan: LeviathanResource) -> dg.MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    view = view_of(leviathan.event_log())
    with view.lock:
        view.require("metrics")
        view.refresh()
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
