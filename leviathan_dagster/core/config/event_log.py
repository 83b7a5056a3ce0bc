"""The ``event_log:`` section of leviathan.yaml: which backend holds the audit trail, and where.

event_log:
  backend: postgres                      # or ndjson (the default)
  dsn: {env: LEVIATHAN_EVENT_LOG_DSN}    # postgres: a secret, so an environment reference only
  table_prefix: leviathan                # postgres, optional
  path: ./events/events.ndjson           # ndjson, optional (default <home>/events/events.ndjson)
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, Field, ValidationInfo, model_validator
from pydantic.dataclasses import dataclass

from leviathan_dagster.core.config.fields import (
    MODEL_CONFIG,
    env_reference,
    file_context,
    invalid,
    matching,
    resolve_path,
)
from leviathan_dagster.core.config.yaml_nodes import Reporter

EVENT_LOG_BACKENDS = ("ndjson", "postgres")
DEFAULT_DSN_ENV = "LEVIATHAN_EVENT_LOG_DSN"
_DSN_FIX = (
    "a DSN carries a password, so name the environment variable that holds it: "
    f"'dsn: {{env: {DEFAULT_DSN_ENV}}}'"
)
_UNUSED = {"ndjson": ("dsn", "table_prefix"), "postgres": ("path",)}

DsnReference = env_reference(_DSN_FIX)
LogPath = Annotated[
    matching(re.compile(r"(?s).*\S.*"), "must be a file path", "write e.g. 'path: ./events/events.ndjson'"),
    AfterValidator(resolve_path),
]
TablePrefix = matching(
    re.compile(r"[a-z_][a-z0-9_]{0,40}"),
    "must be a lowercase SQL name",
    "use letters, digits and '_', starting with a letter, e.g. 'leviathan'",
)


@dataclass(frozen=True, config=MODEL_CONFIG)
class EventLogSettings:
    """Where the event log lives: the ``event_log:`` section of leviathan.yaml."""

    backend: Literal["ndjson", "postgres"] = Field("ndjson", examples=["postgres"])
    """`ndjson` (a file under the Leviathan home, the embedded default) or `postgres` (many writers)."""
    dsn_env: DsnReference | None = Field(None, validation_alias="dsn", examples=[{"env": DEFAULT_DSN_ENV}])
    """postgres: `{env: VAR}`, the environment variable holding the DSN (a secret: never the DSN itself)."""
    path: LogPath | None = Field(None, examples=["./events/events.ndjson"])
    """ndjson: the log file (relative to this file); none: `<home>/events/events.ndjson`."""
    table_prefix: TablePrefix = "leviathan"
    """postgres: tables are named `<table_prefix>_events` and `<table_prefix>_head`."""

    @model_validator(mode="after")
    def _postgres_needs_a_dsn(self, info: ValidationInfo) -> EventLogSettings:
        # Only a file must say it: code may leave the variable to LEVIATHAN_EVENT_LOG_DSN (the CLI does).
        if file_context(info) is not None and self.backend == "postgres" and self.dsn_env is None:
            raise invalid(
                "event_log.dsn is required for backend 'postgres'", f"add 'dsn: {{env: {DEFAULT_DSN_ENV}}}'"
            )
        return self


def warn_unused_event_log_keys(
    settings: EventLogSettings, items: dict[str, tuple[yaml.Node, yaml.Node]], report: Reporter
) -> None:
    """A key the chosen backend does not read is a warning: it is probably meant for the other one."""
    for name in _UNUSED[settings.backend]:
        if name in items:
            report.warn(items[name][0], "", f"event_log.{name} is ignored by backend {settings.backend!r}")
