"""Secrets in the project config: referenced by environment variable (``{env: NAME}``), never literal.

The models read a target's ``secrets:`` mapping (``config_fields.env_reference``); ``check_literal_secrets``
catches secret-looking keys holding a literal value anywhere else, and ``resolve_secret`` reads a
configured secret at run time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import yaml

from leviathan_dagster.core.config.fields import LITERAL_SECRET_FIX
from leviathan_dagster.core.config.yaml_nodes import Reporter, YamlDocument
from leviathan_dagster.core.redaction import register_secret

if TYPE_CHECKING:
    from leviathan_dagster.core.config.models import TargetConfig

_SECRET_WORDS = ("token", "password", "secret", "api_key", "private_key")
# Keys that *name* where a secret lives (a Kubernetes Secret, a file) rather than hold one.
_REFERENCE_SUFFIXES = ("_name", "_ref", "_file", "_path")


def looks_like_secret_key(name: str) -> bool:
    """Whether a key by this name would hold a secret (``github_token``, ``api_key`` …), rather than
    name where one lives (``secret_name``, ``token_file``)."""
    name = name.lower()
    return any(word in name for word in _SECRET_WORDS) and not name.endswith(_REFERENCE_SUFFIXES)


def literal_fix(name: str) -> str:
    return LITERAL_SECRET_FIX.replace("{key}", name).replace("{KEY}", name.upper())


def check_literal_secrets(
    pairs: Iterable[tuple[yaml.Node, yaml.Node]], doc: YamlDocument, who: str, report: Reporter
) -> None:
    """Report every secret-looking key with a literal string value among ``pairs`` and below them.

    ``secrets:`` itself is skipped: the model reports its entries with a more precise message.
    """
    for key, value in pairs:
        name = str(key.value).lower() if isinstance(key, yaml.ScalarNode) else ""
        if name == "secrets":
            continue
        literal = doc.value(value)
        if looks_like_secret_key(name) and isinstance(literal, str) and literal:
            report.error(value, who, f"field {key.value!r} holds a literal secret", literal_fix(key.value))
        for child in value.value if isinstance(value, yaml.SequenceNode) else [value]:
            if isinstance(child, yaml.MappingNode):
                check_literal_secrets(child.value, doc, who, report)


def resolve_secret(target: TargetConfig, name: str, environ: Mapping[str, str]) -> str | None:
    """The secret ``name`` of ``target`` read from ``environ``; None if not configured, unset or empty."""
    env = target.secret_env.get(name)
    value = (environ.get(env) or None) if env else None
    register_secret(value)  # from here on redacted by value everywhere (core/redaction.py)
    return value
