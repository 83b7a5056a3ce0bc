"""The reference tables of docs/configuration.md, generated from the config models' declarations.

Each row is one field: its key, its default with the inclusive bounds, and its docstring. The document
keeps its prose; only the text between ``BEGIN`` and ``END`` markers is generated, one block per table.
``python -m leviathan_dagster.core.config.reference`` rewrites the document; tests/test_config_reference.py
fails when the document and the models disagree.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

from pydantic.fields import FieldInfo

from leviathan_dagster.core.config.control_plane import ControlPlaneSettings, ControlPlaneToken
from leviathan_dagster.core.config.env_settings import variable_names
from leviathan_dagster.core.config.event_log import EventLogSettings
from leviathan_dagster.core.config.github import GithubSettings
from leviathan_dagster.core.config.kubernetes import KubernetesSettings, ResourceRequests
from leviathan_dagster.core.config.models import Policy, ProjectConfig, TargetConfig
from leviathan_dagster.core.generators.claude.settings import ENV_PREFIX, ClaudeSettings

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
# Keys the loader reads itself (not fields of a model): the targets list and the shared policy defaults.
LOADER_KEYS = {
    "targets": ("required", "the targets, each a mapping of the `targets[]` keys below"),
    "defaults": ("none", "policy keys applied to every target unless the target sets them"),
}
# ProjectConfig fields the loader fills in: they are results, not keys of the file.
_RESULT_FIELDS = ("source", "targets", "warnings", "broken_targets")
_BLOCK = re.compile(r"(<!-- BEGIN generated: (?P<name>[\w-]+) -->\n).*?(<!-- END generated -->)", re.S)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if dataclasses.is_dataclass(value):
        return "see below"
    if value is None or value == () or (hasattr(value, "keys") and not value):
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ", ".join(f"`{item}`" for item in value)
    if isinstance(value, str | Path):
        return f"`{value}`"
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _bounds(info: FieldInfo) -> str:
    bounds = {
        name: getattr(m, name) for m in info.metadata for name in ("ge", "gt", "le") if hasattr(m, name)
    }
    if "ge" in bounds and "le" in bounds:
        low, high = bounds["ge"], bounds["le"]
        text = f"{low:,}–{high:,}" if isinstance(low, int) else f"{low:g}–{high:,}"
        return f" ({text})"
    if "gt" in bounds:
        return f" (> {bounds['gt']:g})"
    if "ge" in bounds:
        return f" (≥ {bounds['ge']:g})"
    return ""


def _meaning(info: FieldInfo) -> str:
    return " ".join((info.description or "").split()).replace("|", "\\|")


def rows(
    model: type, prefix: str = "", skip: tuple[str, ...] = (), names: dict[str, str] | None = None
) -> list[str]:
    """One table row per field of ``model`` (keys as written in the file, under ``prefix``)."""
    fields: dict[str, FieldInfo] = model.__pydantic_fields__  # type: ignore[attr-defined]
    lines = []
    for name, info in fields.items():
        if name in skip:
            continue
        key = names[name] if names else prefix + (info.validation_alias or name)  # type: ignore[operator]
        lines.append(f"| `{key}` | {_default(info)}{_bounds(info)} | {_meaning(info)} |")
    return lines


def _table(lines: list[str]) -> str:
    return "\n".join(["| key | default | meaning |", "|---|---|---|", *lines]) + "\n"


def tables() -> dict[str, str]:
    """Each generated block of the document by name."""
    loader = [f"| `{key}` | {default} | {meaning} |" for key, (default, meaning) in LOADER_KEYS.items()]
    return {
        "project": _table([*rows(ProjectConfig, skip=_RESULT_FIELDS), *loader]),
        "target": _table(rows(TargetConfig, "targets[].", skip=("policy",))),
        "policy": _table(rows(Policy, "policy.")),
        "resources": _table(rows(ResourceRequests, "resources.")),
        "github": _table(rows(GithubSettings, "github.")),
        "kubernetes": _table(rows(KubernetesSettings)),
        "event-log": _table(rows(EventLogSettings, "event_log.")),
        "control-plane": _table(
            [
                *rows(ControlPlaneSettings, "control_plane."),
                *rows(ControlPlaneToken, "control_plane.tokens[]."),
            ]
        ),
        "claude-env": _table(rows(ClaudeSettings, names=variable_names(ClaudeSettings, ENV_PREFIX))),
    }


def regenerate(text: str) -> str:
    """``text`` with every generated block replaced by the models' current tables."""
    generated = tables()

    def block(match: re.Match[str]) -> str:
        return match.group(1) + generated[match.group("name")] + match.group(3)

    return _BLOCK.sub(block, text)


def block_names(text: str) -> list[str]:
    return [match.group("name") for match in _BLOCK.finditer(text)]


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    new = regenerate(text)
    if "--check" in argv:
        print("docs/configuration.md is up to date" if new == text else "docs/configuration.md is stale")
        return 0 if new == text else 1
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
