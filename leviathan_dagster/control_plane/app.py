"""The control plane: a small Starlette service in front of one event store.

Order of checks on ingest, each cheaper than the next and none writing anything: bearer token (401),
declared and actual body size (413), strict JSON (400), bundle schema (422). Only then is the bundle
appended, in one ``store.append`` call so it is one transaction; the store makes that idempotent by
event_id (a replay returns the original seqs) and raises ``ConflictError`` (409) for an event_id reused
with different content. Store calls are blocking (fsync, SQL), so they run in the thread pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from leviathan_dagster.control_plane.bundle import (
    MAX_CLOCK_AHEAD_SECONDS,
    Bundle,
    InvalidBundle,
    MalformedBody,
    ahead_of_clock,
    inconsistencies,
    parse_json,
    validate_bundle,
)
from leviathan_dagster.control_plane.http import (
    BODY_TIMEOUT_SECONDS,
    ApiError,
    api_error,
    corrupted,
    http_error,
    int_param,
    internal_error,
    protected,
    query_params,
    read_body,
    unavailable,
    unexpected_error,
)
from leviathan_dagster.control_plane.metrics import Metrics, MetricsMiddleware
from leviathan_dagster.control_plane.openapi import openapi_document
from leviathan_dagster.control_plane.state import LogView, TargetsStatus, read_page
from leviathan_dagster.core.errors import (
    ConfigError,
    ConflictError,
    EventLogCorrupted,
    LeviathanError,
    TransientError,
)
from leviathan_dagster.core.events.access import Principal, refusal
from leviathan_dagster.core.events.chain import InvalidEvent
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.redaction import register_secret

LEGACY_TOKEN = "control-plane"  # the principal of the single unnamed token (LEVIATHAN_CONTROL_PLANE_TOKEN)
MAX_PAGE = 1000
MAX_SEQ = 2**53 - 1  # as the OpenAPI document says (and far beyond any real log)
DEFAULT_PAGE = 100


def create_app(
    store: EventStore,
    *,
    token: str | None = None,
    tokens: Mapping[str, Principal] | None = None,
    worker_key: bytes | None = None,
    max_bundle_bytes: int = 1_048_576,
    max_clock_ahead_seconds: int = MAX_CLOCK_AHEAD_SECONDS,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    targets_status: TargetsStatus | None = None,
) -> Starlette:
    """The control-plane ASGI app over ``store``; every route but /healthz and /metrics needs
    ``Authorization: Bearer <token>``. ``targets_status`` adds per-target config (policy) to
    /v1/autonomy/status.

    Tokens (see ``core.events.access``): ``tokens`` maps each named token's secret to its
    :class:`Principal` (operator or orchestrator; its name becomes the ``actor_id`` of what it appends);
    ``worker_key`` accepts per-attempt worker tokens minted from it. ``max_clock_ahead_seconds``: how far
    past this server's clock an event's times may be (409 beyond it). ``token`` is the unnamed token of
    a single-token setup: it may append everything but operator actions, under the producer's actor_id.
    """
    principals = [(secret.encode("utf-8"), who) for secret, who in (tokens or {}).items()]
    if token is not None:
        if not isinstance(token, str) or not token.strip():
            raise ConfigError("control plane token is empty; set LEVIATHAN_CONTROL_PLANE_TOKEN")
        principals.append((token.encode("utf-8"), Principal(LEGACY_TOKEN, "orchestrator")))
    if any(not secret.strip() for secret, _ in principals):
        raise ConfigError("a control plane token is empty; set its environment variable")
    if not principals and not worker_key:
        raise ConfigError("control plane has no token; set LEVIATHAN_CONTROL_PLANE_TOKEN")
    for secret, _ in principals:  # redacted by value from every event, log and error
        register_secret(secret.decode("utf-8"))
    if worker_key:  # a key that is not text cannot appear in text
        register_secret(worker_key.decode("utf-8", errors="ignore"))
    if not isinstance(max_clock_ahead_seconds, int) or max_clock_ahead_seconds < 0:
        raise ConfigError(
            f"max_clock_ahead_seconds must be a non-negative integer, got {max_clock_ahead_seconds!r}"
        )
    if not isinstance(max_bundle_bytes, int) or max_bundle_bytes < 1:
        raise ConfigError(f"max_bundle_bytes must be a positive integer, got {max_bundle_bytes!r}")
    metrics = Metrics()
    routes = [
        Route("/v1/events/ingest", protected(ingest), methods=["POST"]),
        Route("/v1/events", protected(list_events), methods=["GET"]),
        Route("/v1/graph/summary", protected(graph_summary), methods=["GET"]),
        Route("/v1/attempts/{attempt_id}", protected(get_attempt), methods=["GET"]),
        Route("/v1/autonomy/status", protected(autonomy_status), methods=["GET"]),
        Route("/openapi.json", protected(openapi), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", prometheus_metrics, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(MetricsMiddleware, metrics=metrics)],
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            TransientError: unavailable,
            EventLogCorrupted: corrupted,
            LeviathanError: internal_error,
            Exception: unexpected_error,
        },
    )
    app.state.store = store
    app.state.view = LogView(store, targets_status)
    app.state.metrics = metrics
    app.state.principals = principals
    app.state.worker_key = worker_key
    app.state.max_bundle_bytes = max_bundle_bytes
    app.state.max_clock_ahead_seconds = max_clock_ahead_seconds
    app.state.body_timeout = body_timeout
    return app


# -- endpoints ---------------------------------------------------------------------------------------


async def ingest(request: Request) -> Response:
    state = request.app.state
    body = await read_body(request, state.max_bundle_bytes, state.body_timeout)
    try:
        bundle = validate_bundle(parse_json(body))
    except MalformedBody as exc:
        raise ApiError(400, "malformed JSON", str(exc)) from None
    except InvalidBundle as exc:
        raise ApiError(422, str(exc), exc.problems) from None
    conflicts = inconsistencies(bundle) + ahead_of_clock(bundle, utc_now(), state.max_clock_ahead_seconds)
    if conflicts:
        raise ApiError(409, "bundle contradicts itself; nothing was written", conflicts)
    bundle = _as_principal(request.state.principal, bundle)
    head_before, _ = await run_in_threadpool(state.store.head)
    try:
        stored = await run_in_threadpool(state.store.append, bundle.events)
    except ConflictError as exc:
        raise ApiError(
            409, "event_id conflict: already in the log with different content", str(exc)
        ) from None
    except InvalidEvent as exc:
        raise ApiError(422, str(exc), [str(exc)]) from None
    # Replayed events come back with their original seqs, at or below the head read just before. (An
    # identical bundle appended concurrently in between would count as written in both responses;
    # only these counts are affected, never the log.)
    written = sum(1 for s in stored if s.seq > head_before)
    state.metrics.ingested_bundles.inc()
    state.metrics.ingested_events.inc(written)
    state.metrics.replayed_events.inc(len(stored) - written)
    return JSONResponse(
        {
            "target": bundle.target,
            "bundle_id": bundle.bundle_id,
            "seqs": [s.seq for s in stored],
            "written": written,
            "replayed": len(stored) - written,
            "artifacts": len(bundle.artifacts),
        }
    )


def _as_principal(principal: Principal, bundle: Bundle) -> Bundle:
    """The bundle as ``principal`` may append it (403 naming each refused event): a named token's name
    becomes each event's ``actor_id``, so the log records who really sent it."""
    refused = [
        f"events[{index}]: {why}"
        for index, event in enumerate(bundle.events)
        if (why := refusal(principal, event)) is not None
    ]
    if refused:
        raise ApiError(403, f"token {principal.name!r} ({principal.role}) may not append this", refused)
    if principal.name == LEGACY_TOKEN:
        return bundle
    return replace(bundle, events=[replace(event, actor_id=principal.name) for event in bundle.events])


async def list_events(request: Request) -> Response:
    params = query_params(request, ("after", "limit"))
    after = int_param(params, "after", 0, minimum=0, maximum=MAX_SEQ)
    limit = int_param(params, "limit", DEFAULT_PAGE, minimum=1, maximum=MAX_PAGE)
    store = request.app.state.store
    events = await run_in_threadpool(read_page, store, after, limit)
    head_seq, _ = await run_in_threadpool(store.head)
    torn = await run_in_threadpool(store.torn_tail)
    next_after = events[-1]["seq"] if events else after
    return JSONResponse(
        {
            "events": events,
            "next_after": next_after,
            "head_seq": head_seq,
            "torn": torn.to_dict() if torn is not None else None,
        }
    )


async def graph_summary(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(request.app.state.view.summary))


async def get_attempt(request: Request) -> Response:
    attempt_id = request.path_params["attempt_id"]
    found = await run_in_threadpool(request.app.state.view.attempt, attempt_id)
    if found is None:
        raise ApiError(404, "attempt not found", {"attempt_id": attempt_id})
    return JSONResponse(found)


async def autonomy_status(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(request.app.state.view.autonomy_status))


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


async def healthz(request: Request) -> Response:
    store = request.app.state.store
    try:
        seq, head_hash = await run_in_threadpool(store.head)
        torn = await run_in_threadpool(store.torn_tail)
    except Exception as exc:  # any failure to read the head means "not healthy", whatever its type
        raise ApiError(503, "event store unavailable", f"{type(exc).__name__}: {exc}") from None
    # A torn tail is reported, not repaired (only an append repairs): the service still answers.
    body = {"status": "ok" if torn is None else "torn", "head_seq": seq, "head_hash": head_hash}
    body["torn"] = None if torn is None else {**torn.to_dict(), "detail": torn.describe()}
    return JSONResponse(body)


async def prometheus_metrics(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    try:
        seq, _ = await run_in_threadpool(request.app.state.store.head)
        metrics.head_seq.set(seq)
    except Exception:  # a scrape still reports the counters; /healthz is where the store's state shows
        pass
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
