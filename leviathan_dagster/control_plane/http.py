"""Request checks (bearer token, body size, query parameters) and the JSON error responses.

Every error leaves as ``{"error": <what>, "detail": <exactly what>}`` with its status code.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from leviathan_dagster.core.events.access import Principal, worker_principal

RETRY_AFTER_SECONDS = "1"
BODY_TIMEOUT_SECONDS = 30.0

logger = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


class ApiError(Exception):
    """An error answered as ``{"error": ..., "detail": ...}`` with its status code."""

    def __init__(
        self, status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(error)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


# -- auth, body, parameters --------------------------------------------------------------------------


def protected(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` answering 401 unless the request carries one of the app's tokens; the
    :class:`Principal` it names is left in ``request.state.principal``."""

    @functools.wraps(endpoint)
    async def checked(request: Request) -> Response:
        request.state.principal = _check_token(request)
        return await endpoint(request)

    return checked


def _check_token(request: Request) -> Principal:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise ApiError(401, "bearer token required", headers={"WWW-Authenticate": 'Bearer realm="leviathan"'})
    # compare_digest takes time independent of where the first differing byte is, so a client cannot
    # find the token byte by byte from response times.
    # Starlette decodes headers as latin-1; encoding back gives the bytes the client actually sent.
    # Every configured token is compared (no early exit), so timing does not tell which one was close.
    presented = credentials.strip().encode("latin-1")
    found = None
    for secret, principal in request.app.state.principals:
        if hmac.compare_digest(presented, secret):
            found = principal
    if found is None:
        found = worker_principal(request.app.state.worker_key, presented.decode("latin-1"))
    if found is None:
        raise ApiError(
            401,
            "invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="leviathan", error="invalid_token"'},
        )
    return found


async def read_body(request: Request, limit: int, timeout: float = BODY_TIMEOUT_SECONDS) -> bytes:
    """The body, refusing more than ``limit`` bytes before reading it (declared length) and while
    reading it (chunked bodies, or a Content-Length that lies), and answering 408 when the whole body
    has not arrived within ``timeout`` seconds: a client that trickles bytes (or stops sending) would
    otherwise hold a connection and a request slot for as long as it likes.

    A client that disconnects mid-body is logged in one line (not a traceback) and nothing is written.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _read_body(request, limit)
    except TimeoutError:
        raise ApiError(408, "request body timeout", f"the body did not arrive within {timeout:g} s") from None
    except ClientDisconnect:
        client = f"{request.client.host}:{request.client.port}" if request.client else "client"
        logger.info(
            "%s %s: %s disconnected before sending the whole body", request.method, request.url.path, client
        )
        raise ApiError(400, "client disconnected", None) from None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not _is_decimal(declared):
            raise ApiError(400, "invalid Content-Length header", declared)
        if int(declared) > limit:
            raise ApiError(413, "bundle too large", f"{declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "bundle too large", f"more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def query_params(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters; 400 for a name not in ``allowed`` (a typo must not be silently ignored)
    or a name given twice."""
    params = request.query_params
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ApiError(
            400, "unknown query parameter", f"{', '.join(unknown)} (allowed: {', '.join(allowed)})"
        )
    repeated = sorted(key for key in params if len(params.getlist(key)) > 1)
    if repeated:
        raise ApiError(400, "repeated query parameter", ", ".join(repeated))
    return dict(params)


def int_param(
    params: dict[str, str], name: str, default: int, *, minimum: int, maximum: int | None = None
) -> int:
    """``params[name]`` as a decimal integer within bounds, else 400."""
    raw = params.get(name)
    if raw is None:
        return default
    bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
    if not _is_decimal(raw) or int(raw) < minimum or (maximum is not None and int(raw) > maximum):
        raise ApiError(400, f"bad query parameter '{name}'", f"{raw!r} is not an integer in {bound}")
    return int(raw)


def _is_decimal(text: str) -> bool:
    # isdigit() alone accepts "²" and other Unicode digits that int() rejects; the length cap keeps
    # int() away from Python's digit limit.
    return text.isascii() and text.isdigit() and len(text) <= 30


# -- error responses ---------------------------------------------------------------------------------


async def api_error(request: Request, exc: Exception) -> Response:
    """Exception handlers, one per error kind, all answering the same JSON shape."""
    assert isinstance(exc, ApiError)
    return JSONResponse({"error": exc.error, "detail": exc.detail}, exc.status, headers=exc.headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail, "detail": None}, exc.status_code, headers=exc.headers)


async def unavailable(request: Request, exc: Exception) -> Response:
    headers = {"Retry-After": RETRY_AFTER_SECONDS}
    return JSONResponse({"error": "event store unavailable", "detail": str(exc)}, 503, headers=headers)


async def corrupted(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "event log corrupted", "detail": str(exc)}, 500)


async def internal_error(request: Request, exc: Exception) -> Response:
    # Leviathan's own errors carry messages written for operators (a bad project config, ...).
    return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, 500)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    # Anything else is a bug: the traceback goes to the server log, never to the client.
    return JSONResponse({"error": "internal server error", "detail": None}, 500)
