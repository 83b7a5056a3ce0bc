"""The control plane API: event ingestion, graph and attempt queries, autonomy status, metrics."""

from leviathan_dagster.control_plane.app import create_app

__all__ = ["create_app"]
