"""Which event-log backend to open: NDJSON (the embedded default) or PostgreSQL, from ``event_log:``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import EventLogSettings


def open_event_log(
    home: LeviathanHome,
    settings: EventLogSettings | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    read_only: bool = False,
) -> EventStore:
    """The event log ``settings`` describe (None: the NDJSON file under ``home``).

    ``environ`` (default ``os.environ``) is where a PostgreSQL DSN's environment variable is read, when
    the log is opened and not before. Raises :class:`ConfigError` for an unknown backend or a missing DSN.
    ``read_only`` (read commands) creates nothing: a missing NDJSON log is :class:`NotFoundError`.
    """
    settings = settings or EventLogSettings()
    opener = BACKENDS.get(settings.backend)
    if opener is None:
        raise ConfigError(
            f"event_log.backend {settings.backend!r} is unknown (available: {', '.join(BACKENDS)}). "
            "Fix: write e.g. 'backend: ndjson'."
        )
    return opener(home, settings, os.environ if environ is None else environ, read_only=read_only)


def _open_ndjson(
    home: LeviathanHome, settings: EventLogSettings, environ: Mapping[str, str], *, read_only: bool = False
) -> EventStore:
    return NdjsonEventLog(_ndjson_path(home, settings), read_only=read_only)


def _ndjson_path(home: LeviathanHome, settings: EventLogSettings) -> Path:
    return Path(settings.path) if settings.path else home.events_path


def _open_postgres(
    home: LeviathanHome, settings: EventLogSettings, environ: Mapping[str, str], *, read_only: bool = False
) -> EventStore:
    # Imported here so that NDJSON users never pay for loading psycopg.
    from leviathan_dagster.core.events.postgres.store import PostgresEventLog

    if not settings.dsn_env:
        raise ConfigError(
            "event_log.dsn is required for backend 'postgres'. "
            "Fix: add 'dsn: {env: LEVIATHAN_EVENT_LOG_DSN}' under 'event_log:'."
        )
    dsn = environ.get(settings.dsn_env)
    if not dsn:
        raise ConfigError(
            f"event_log.dsn: environment variable {settings.dsn_env} is not set. "
            f"Fix: export {settings.dsn_env}=postgresql://USER:PASSWORD@HOST:5432/DATABASE."
        )
    return PostgresEventLog(dsn, table_prefix=settings.table_prefix, read_only=read_only)


BACKENDS: dict[str, Callable[..., EventStore]] = {
    "ndjson": _open_ndjson,
    "postgres": _open_postgres,
}
