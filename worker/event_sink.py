"""Where the worker's events go: the local event log, or the control plane's ingest API when
``CONTROL_PLANE_URL`` is set (seed 003: workers post event bundles; they never touch the log directly).

Posting is safe to retry whatever happened to the previous try: ingestion is idempotent by event_id,
so a bundle that was written but whose response was lost is simply acknowledged again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.errors import ConfigError, ConflictError, LeviathanError, TransientError
from leviathan_dagster.core.events.model import Event
from leviathan_dagster.core.events.registry import open_event_log
from leviathan_dagster.core.events.retry import RetryingAppender
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import ProjectConfig
from worker.environment import WorkerEnv

if TYPE_CHECKING:
    import urllib.error

# http.client and urllib (with the email package they pull in) are imported by the control-plane sink
# when one is made: a worker writing to the local log never loads them (measured with
# `python -X importtime -m worker`).

TIMEOUT_SECONDS = 10.0
RETRIES = 3  # after the first try
BACKOFF_SECONDS = 0.5  # doubled after each try
MAX_RETRY_AFTER_SECONDS = 30.0
# Statuses worth another try: the server is overloaded, restarting or briefly without its store.
# Every other error status (bad token, bad bundle, conflict) would fail the same way again.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
INGEST_PATH = "/v1/events/ingest"


class EventSink(Protocol):
    """Somewhere the worker appends its events; one call is one atomic bundle."""

    def append(self, events: Sequence[Event]) -> list[int]:
        """Append ``events`` as one bundle; returns their seqs in the log."""
        ...


class StoreSink:
    """Appends straight to an event store (the embedded default), retrying transient failures (a
    database restart, a killed connection, a busy head lock) with backoff: the worker's bundle is what
    proves its PR, so one failed try must not lose it. ``opener`` reopens the store between tries."""

    def __init__(
        self,
        store: EventStore | None = None,
        *,
        opener: Callable[[], EventStore] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._appender = RetryingAppender(store, opener=opener, sleep=sleep)

    @property
    def store(self) -> EventStore:
        return self._appender.store

    def append(self, events: Sequence[Event]) -> list[int]:
        return [stored.seq for stored in self._appender.append(events)]


class ControlPlaneSink:
    """POSTs each append as one bundle to the control plane, retrying transient failures.

    Raises :class:`TransientError` when the control plane stays unreachable or overloaded through every
    retry, :class:`ConflictError` on 409 (an event_id already logged with other content) and
    :class:`LeviathanError` on any other refusal (bad token, invalid bundle).
    """

    def __init__(
        self,
        url: str,
        token: str,
        target: str,
        attempt_id: str,
        *,
        timeout: float = TIMEOUT_SECONDS,
        backoff: float = BACKOFF_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import urllib.parse

        parsed = urllib.parse.urlsplit(url)
        # urllib also opens file:// and ftp:// URLs; only HTTP(S) is a control plane.
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"CONTROL_PLANE_URL must be an http(s):// URL, got {url!r}")
        if not token:
            raise ConfigError("CONTROL_PLANE_URL is set but CONTROL_PLANE_TOKEN is not")
        self.endpoint = url.rstrip("/") + INGEST_PATH
        self.target = target
        self.attempt_id = attempt_id
        self._token = token
        self._timeout = timeout
        self._backoff = backoff
        self._sleep = sleep
        self._bundles = 0

    def __repr__(self) -> str:  # never the token
        return f"ControlPlaneSink({self.endpoint!r}, target={self.target!r})"

    def append(self, events: Sequence[Event]) -> list[int]:
        events = list(events)
        if not events:
            return []
        self._bundles += 1
        bundle_id = f"{self.attempt_id}-{self._bundles}"
        bundle = {
            "target": self.target,
            "bundle_id": bundle_id,
            "events": [event.body() for event in events],
            "artifacts": [],
        }
        body = json.dumps(bundle, allow_nan=False, ensure_ascii=False).encode("utf-8")
        answer = self._post(body, bundle_id)
        seqs = answer.get("seqs") if isinstance(answer, dict) else None
        if not isinstance(seqs, list) or len(seqs) != len(events):
            raise LeviathanError(
                f"control plane {self.endpoint}: unexpected answer to {bundle_id}: {answer!r}"
            )
        return seqs

    def _post(self, body: bytes, bundle_id: str) -> Any:
        import http.client
        import urllib.error
        import urllib.request

        problem = ""
        for attempt in range(RETRIES + 1):
            delay = self._backoff * 2**attempt
            request = urllib.request.Request(
                self.endpoint,
                data=body,
                method="POST",
                headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:  # before OSError: HTTPError is one
                with exc:  # the error holds the connection: close it now, not when collected
                    detail = _error_detail(exc)
                if exc.code == 409:
                    raise ConflictError(f"control plane refused {bundle_id}: {detail}") from None
                if exc.code not in RETRYABLE_STATUS:
                    raise LeviathanError(
                        f"control plane refused {bundle_id} with HTTP {exc.code}: {detail}"
                    ) from None
                problem = f"HTTP {exc.code}: {detail}"
                delay = _retry_after(exc.headers.get("Retry-After")) or delay
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # Refused or reset connections, timeouts, truncated or non-JSON answers.
                problem = f"{type(exc).__name__}: {exc}"
            if attempt < RETRIES:
                self._sleep(delay)
        raise TransientError(
            f"control plane {self.endpoint}: {bundle_id} not acknowledged "
            f"after {RETRIES + 1} tries ({problem})"
        )


def local_log_config(env: WorkerEnv) -> ProjectConfig | None:
    """The project config that names the local event log's backend: None when the events go to the
    control plane or there is no config file (the default backend then)."""
    if env.control_plane_url or not env.config_path.exists():
        return None
    return load_project_config(env.config_path, isolate_targets=True)


def sink_for(env: WorkerEnv, home: LeviathanHome, project: ProjectConfig | None = None) -> EventSink:
    """The control plane when ``CONTROL_PLANE_URL`` is set, else the local event log of ``home``
    (``project``: ``local_log_config(env)`` when the caller has already read it)."""
    if env.control_plane_url:
        return ControlPlaneSink(
            env.control_plane_url, env.control_plane_token or "", env.target_id, env.attempt_id
        )
    # The same backend the orchestrator writes to (leviathan.yaml's ``event_log``), so the worker's
    # events and the orchestrator's land in one chain.
    if project is None:
        project = local_log_config(env)
    settings = project.event_log if project is not None else None

    def opened():
        store = open_event_log(home, settings)
        if env.log_after_seq:  # the worker's own events start there: no need to index what came before
            store.expect_new_ids_after(env.log_after_seq)
        return store

    # Opened now, so that a bad event_log setting is the worker's first error, and again after a failure.
    return StoreSink(opened(), opener=opened)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (the delta form; an HTTP date falls back to backoff)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    if seconds is None or not 0 <= seconds < float("inf"):
        return None
    return min(seconds, MAX_RETRY_AFTER_SECONDS)


def _error_detail(exc: urllib.error.HTTPError) -> str:
    import http.client

    try:
        raw = exc.read()
        data = json.loads(raw)
        text = f"{data.get('error')}: {data.get('detail')}" if isinstance(data, dict) else raw.decode()
        return text[:500]
    except (OSError, ValueError, http.client.HTTPException):
        return exc.reason if isinstance(exc.reason, str) else str(exc)
