"""docs/configuration.md's reference tables are the config models' declarations, never a copy of them."""

from __future__ import annotations

import typing

import pytest

from leviathan_dagster.core.config import reference as config_reference
from leviathan_dagster.core.config.control_plane import ControlPlaneSettings, ControlPlaneToken
from leviathan_dagster.core.config.event_log import EventLogSettings
from leviathan_dagster.core.config.github import GithubSettings
from leviathan_dagster.core.config.kubernetes import KubernetesSettings, ResourceRequests
from leviathan_dagster.core.config.models import Policy, ProjectConfig, TargetConfig
from leviathan_dagster.core.generators.claude.settings import ClaudeSettings

MODELS = [
    ProjectConfig,
    TargetConfig,
    Policy,
    ResourceRequests,
    GithubSettings,
    KubernetesSettings,
    EventLogSettings,
    ControlPlaneSettings,
    ControlPlaneToken,
    ClaudeSettings,
]


def test_the_document_is_what_the_models_declare() -> None:
    text = config_reference.DOC.read_text(encoding="utf-8")
    assert config_reference.regenerate(text) == text, (
        "docs/configuration.md disagrees with the models: "
        "run `python -m leviathan_dagster.core.config.reference`"
    )
    assert sorted(config_reference.block_names(text)) == sorted(config_reference.tables())


def test_a_changed_docstring_makes_the_document_stale() -> None:
    text = config_reference.DOC.read_text(encoding="utf-8")
    edited = text.replace("Open `agent/` PRs at which the target stops", "Open PRs at which", 1)
    assert edited != text and config_reference.regenerate(edited) == text


@pytest.mark.parametrize("model", MODELS, ids=[m.__name__ for m in MODELS])
def test_every_field_is_documented_and_every_number_bounded(model: type) -> None:
    for name, info in model.__pydantic_fields__.items():
        assert info.description, f"{model.__name__}.{name} has no docstring"
        args = [a for a in typing.get_args(info.annotation) if a is not type(None)] or [info.annotation]
        if model is not ClaudeSettings and args[0] in (int, float) and len(args) == 1:
            bounds = {b for m in info.metadata for b in ("ge", "le") if getattr(m, b, None) is not None}
            assert bounds == {"ge", "le"}, f"{model.__name__}.{name} has no lower and upper bound"
