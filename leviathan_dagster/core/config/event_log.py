"""The ``event_log:`` section of leviathan.yaml: which backend holds the audit trail, and where.

event_log:
  backend: postgres                      # or ndjson (the default)
  dsn: {env: LEVIATHAN_EVENT_LOG_DSN}    # postgres: a secret, so an environment reference only
  table_prefix: leviathan                # postgres, optional
  path: ./events/events.ndjson           # ndjson, optional (default <home>/events/events.ndjson)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from leviathan_dagster.core.config.yaml_nodes import Reporter, YamlDocument, describe
from leviathan_dagster.core.models import EVENT_LOG_BACKENDS, EventLogSettings

KEYS = ("backend", "dsn", "path", "table_prefix")
DEFAULT_DSN_ENV = "LEVIATHAN_EVENT_LOG_DSN"
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_DSN_FIX = (
    "a DSN carries a password, so name the environment variable that holds it: "
    f"'dsn: {{env: {DEFAULT_DSN_ENV}}}'"
)


def parse_event_log(doc: YamlDocument, node: yaml.Node, base_dir: Path, report: Reporter) -> EventLogSettings:
    """EventLogSettings from the ``event_log`` node; problems go to ``report`` (defaults stand in)."""
    if not isinstance(node, yaml.MappingNode):
        report.error(
            node,
            "",
            f"'event_log' must be a mapping, got {describe(node)}",
            f"write e.g. 'event_log: {{backend: postgres, dsn: {{env: {DEFAULT_DSN_ENV}}}}}'",
        )
        return EventLogSettings()
    items = report.items(node, "")
    values: dict[str, str] = {}
    for name, (key, value_node) in items.items():
        value = doc.value(value_node)
        if name == "backend":
            if value not in EVENT_LOG_BACKENDS:
                report.error(
                    value_node,
                    "",
                    f"event_log.backend {describe(value_node)} is unknown "
                    f"(available: {', '.join(EVENT_LOG_BACKENDS)})",
                    "write e.g. 'backend: postgres'",
                )
            else:
                values["backend"] = value
        elif name == "dsn":
            env = value.get("env") if isinstance(value, dict) and len(value) == 1 else None
            if isinstance(env, str) and _ENV_RE.match(env):
                values["dsn_env"] = env
            elif isinstance(value, str):
                report.error(value_node, "", "event_log.dsn is written literally", _DSN_FIX)
            else:
                report.error(
                    value_node,
                    "",
                    f"event_log.dsn must be {{env: NAME}} with NAME an environment variable name, "
                    f"got {describe(value_node)}",
                    _DSN_FIX,
                )
        elif name == "path":
            if not isinstance(value, str) or not value.strip():
                report.error(
                    value_node,
                    "",
                    f"event_log.path must be a file path, got {describe(value_node)}",
                    "write e.g. 'path: ./events/events.ndjson'",
                )
            else:
                values["path"] = os.path.normpath(
                    Path(base_dir).expanduser().absolute() / Path(value).expanduser()
                )
        elif name == "table_prefix":
            if not isinstance(value, str) or not _PREFIX_RE.match(value):
                report.error(
                    value_node,
                    "",
                    f"event_log.table_prefix must be a lowercase SQL name, got {describe(value_node)}",
                    "use letters, digits and '_', starting with a letter, e.g. 'leviathan'",
                )
            else:
                values["table_prefix"] = value
        else:
            report.unknown_key(
                key, "", f"field 'event_log.{name}'", KEYS, items, f" (known: {', '.join(KEYS)})"
            )
    backend = values.get("backend", "ndjson")
    if backend == "postgres" and "dsn_env" not in values and "dsn" not in items:
        report.error(
            node,
            "",
            "event_log.dsn is required for backend 'postgres'",
            f"add 'dsn: {{env: {DEFAULT_DSN_ENV}}}'",
        )
    for name in ("dsn", "table_prefix") if backend == "ndjson" else ("path",):
        if name in items:
            report.warn(items[name][0], "", f"event_log.{name} is ignored by backend {backend!r}")
    return EventLogSettings(**values)
