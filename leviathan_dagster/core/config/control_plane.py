"""The ``control_plane:`` section of leviathan.yaml: named tokens with roles, and the worker token key.

control_plane:
  tokens:
    - name: scheduler                      # recorded as actor_id of every event this token appends
      role: orchestrator                   # or operator (operator actions: pause, reset-breaker, ...)
      secret: {env: LEVIATHAN_CP_SCHEDULER_TOKEN}
    - name: alice
      role: operator
      secret: {env: LEVIATHAN_CP_ALICE_TOKEN}
  worker_token_key: {env: LEVIATHAN_CP_WORKER_KEY}   # per-attempt worker tokens are derived from it
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from leviathan_dagster.core.config.sections import project_section
from leviathan_dagster.core.config.yaml_nodes import Reporter, YamlDocument, describe
from leviathan_dagster.core.events.schemas import is_id
from leviathan_dagster.core.models import ControlPlaneSettings, ControlPlaneToken

TOKEN_ROLES = ("operator", "orchestrator")
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN_FIX = (
    "write e.g. '- {name: scheduler, role: orchestrator, secret: {env: LEVIATHAN_CP_SCHEDULER_TOKEN}}'"
)


@project_section("control_plane")
def parse_control_plane(
    doc: YamlDocument, node: yaml.Node, who: str, report: Reporter, base_dir: Path
) -> ControlPlaneSettings:
    if not isinstance(node, yaml.MappingNode):
        report.error(node, who, f"'control_plane' must be a mapping, got {describe(node)}", _TOKEN_FIX)
        return ControlPlaneSettings()
    tokens: list[ControlPlaneToken] = []
    worker_key_env = None
    for name, (key, value_node) in report.items(node, who).items():
        if name == "tokens":
            tokens = _tokens(doc, value_node, who, report)
        elif name == "worker_token_key":
            worker_key_env = _env_ref(doc, value_node, who, report, "control_plane.worker_token_key")
        else:
            report.warn(
                key, who, f"unknown field 'control_plane.{name}' is ignored (known: tokens, worker_token_key)"
            )
    return ControlPlaneSettings(tuple(tokens), worker_key_env)


def _tokens(doc: YamlDocument, node: yaml.Node, who: str, report: Reporter) -> list[ControlPlaneToken]:
    if not isinstance(node, yaml.SequenceNode):
        report.error(node, who, f"control_plane.tokens must be a list, got {describe(node)}", _TOKEN_FIX)
        return []
    tokens: list[ControlPlaneToken] = []
    for index, entry in enumerate(node.value):
        where = f"control_plane.tokens[{index}]"
        if not isinstance(entry, yaml.MappingNode):
            report.error(entry, who, f"{where} must be a mapping, got {describe(entry)}", _TOKEN_FIX)
            continue
        fields = report.items(entry, who)
        name = doc.value(fields["name"][1]) if "name" in fields else None
        role = doc.value(fields["role"][1]) if "role" in fields else None
        secret = (
            _env_ref(doc, fields["secret"][1], who, report, f"{where}.secret") if "secret" in fields else None
        )
        if not is_id(name):
            report.error(
                entry,
                who,
                f"{where}.name must be an id ([A-Za-z0-9][A-Za-z0-9._-]*), got {name!r}",
                _TOKEN_FIX,
            )
        elif any(token.name == name for token in tokens):
            report.error(entry, who, f"{where}.name {name!r} is used twice", "give every token its own name")
        if role not in TOKEN_ROLES:
            report.error(
                entry,
                who,
                f"{where}.role {role!r} is unknown (available: {', '.join(TOKEN_ROLES)})",
                _TOKEN_FIX,
            )
        if "secret" not in fields:
            report.error(entry, who, f"{where}.secret: required", _TOKEN_FIX)
        if is_id(name) and role in TOKEN_ROLES and secret:
            tokens.append(ControlPlaneToken(name, role, secret))
    return tokens


def _env_ref(doc: YamlDocument, node: yaml.Node, who: str, report: Reporter, where: str) -> str | None:
    value = doc.value(node)
    env = value.get("env") if isinstance(value, dict) and len(value) == 1 else None
    if isinstance(env, str) and _ENV_RE.fullmatch(env):
        return env
    report.error(
        node,
        who,
        f"{where} must be {{env: NAME}} (a secret is never written in the file), got {describe(node)}",
        f"write e.g. '{where.rpartition('.')[2]}: {{env: LEVIATHAN_CP_TOKEN}}'",
    )
    return None
