"""Prometheus metrics of one control-plane app, in a private registry (two apps in one process, as in
tests, must not share or collide on counters), and the ASGI middleware that times every request."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    """The control plane's counters, histogram and gauge."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.ingested_events = Counter(
            "leviathan_ingested_events",
            "Events newly written to the log through the ingest endpoint.",
            registry=self.registry,
        )
        self.replayed_events = Counter(
            "leviathan_replayed_events",
            "Events in ingested bundles that were already in the log (nothing written).",
            registry=self.registry,
        )
        self.ingested_bundles = Counter(
            "leviathan_ingested_bundles",
            "Bundles accepted by the ingest endpoint, replays included.",
            registry=self.registry,
        )
        self.rejected_requests = Counter(
            "leviathan_rejected_requests",
            "Requests answered with an error status, by status code.",
            ["status"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "leviathan_request_duration_seconds",
            "Time to answer a request, by route template and method.",
            ["route", "method"],
            registry=self.registry,
        )
        self.head_seq = Gauge(
            "leviathan_event_log_head_seq",
            "Sequence number of the last event in the log when last scraped.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Times each HTTP request and counts error responses.

    Labelled by the route *template* (``/v1/attempts/{attempt_id}``), never the raw path: raw paths
    would give every attempt id its own time series.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app raises before answering, the server error handler answers 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            # The router stores the matched route in the (shared) scope; unmatched paths share a label.
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.request_latency.labels(route, scope["method"]).observe(time.perf_counter() - started)
            if status >= 400:
                self.metrics.rejected_requests.labels(str(status)).inc()
