import dagster as dg

from leviathan_dagster.defs.delivery.assets import costs, delivery_metrics, event_log

delivery_metrics_job = dg.define_asset_job(
    "delivery_metrics_job",
    selection=dg.AssetSelection.assets(delivery_metrics, costs),
    description="Compute one day's delivery metrics and costs from the event log (partition: the UTC day).",
)

event_log_job = dg.define_asset_job(
    "event_log_job",
    selection=dg.AssetSelection.assets(event_log),
    description="Record the event log's size and head, and run its integrity check.",
)
