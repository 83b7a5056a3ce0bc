"""Extension points of leviathan.yaml: typed sections parsed by their own small modules.

A target section (``github:``, ``model:``, ``resources:`` …) maps to a field of ``TargetConfig`` of the
same name; a project section (``kubernetes:`` …) to a field of ``ProjectConfig``. Each parser receives
the YAML node and reports problems through the Reporter (file, line, field, fix) like every other key;
it returns the typed settings object. Registering here keeps config.py from growing a branch per
feature. Parsers are registered by the modules listed in ``SECTION_MODULES`` (imported lazily).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from leviathan_dagster.core.config.yaml_nodes import Reporter, YamlDocument

# parser(doc, node, who, report, base_dir) -> settings object
SectionParser = Callable[[YamlDocument, yaml.Node, str, Reporter, Path], Any]

TARGET_SECTIONS: dict[str, SectionParser] = {}
PROJECT_SECTIONS: dict[str, SectionParser] = {}

# Modules that register sections when imported; add one line per feature.
SECTION_MODULES: tuple[str, ...] = (
    "leviathan_dagster.core.config.kubernetes",
    "leviathan_dagster.core.config.github",
    "leviathan_dagster.core.config.control_plane",
)
_loaded = False


def target_section(name: str) -> Callable[[SectionParser], SectionParser]:
    def register(parser: SectionParser) -> SectionParser:
        TARGET_SECTIONS[name] = parser
        return parser

    return register


def project_section(name: str) -> Callable[[SectionParser], SectionParser]:
    def register(parser: SectionParser) -> SectionParser:
        PROJECT_SECTIONS[name] = parser
        return parser

    return register


def load_sections() -> None:
    global _loaded
    if not _loaded:
        for module in SECTION_MODULES:
            importlib.import_module(module)
        _loaded = True
