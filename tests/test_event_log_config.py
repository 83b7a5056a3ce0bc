"""The ``event_log:`` section of leviathan.yaml and opening the backend it names."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from leviathan_dagster.core.config.project import parse_project_config
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.events.registry import open_event_log
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import EventLogSettings

SRC = "leviathan.yaml"
TARGETS = "targets:\n  - id: t\n    repo_url: /repos/t.git\n"


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_project_config(text, SRC, base_dir=Path("/srv/project"))


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value).splitlines()


def test_without_a_section_the_log_is_ndjson_under_the_home() -> None:
    assert parse(TARGETS).event_log == EventLogSettings(backend="ndjson", path=None, dsn_env=None)


def test_postgres_with_a_dsn_reference() -> None:
    config = parse(
        TARGETS + "event_log:\n  backend: postgres\n  dsn: {env: LOG_DSN}\n  table_prefix: audit\n"
    )
    assert config.event_log == EventLogSettings(backend="postgres", dsn_env="LOG_DSN", table_prefix="audit")
    assert config.warnings == ()


def test_ndjson_path_is_resolved_against_the_config_folder() -> None:
    config = parse(TARGETS + "event_log:\n  backend: ndjson\n  path: logs/events.ndjson\n")
    assert config.event_log.path == "/srv/project/logs/events.ndjson"


def test_the_flat_seed_form_takes_the_section_too() -> None:
    flat = "target_id: t\ntarget_repo_url: /repos/t.git\nevent_log: {backend: postgres, dsn: {env: X}}\n"
    config = parse(flat)
    assert config.event_log.backend == "postgres" and config.warnings == ()


@pytest.mark.parametrize(
    "section, expected",
    [
        (
            "  backend: pgsql\n",
            "leviathan.yaml:5: event_log.backend 'pgsql' is unknown (available: ndjson, postgres). "
            "Fix: write e.g. 'backend: postgres'.",
        ),
        (
            "  backend: postgres\n  dsn: postgresql://u:secret@db/x\n",
            "leviathan.yaml:6: event_log.dsn is written literally. Fix: a DSN carries a password",
        ),
        (
            "  backend: postgres\n  dsn: {env: 'not a name'}\n",
            "leviathan.yaml:6: event_log.dsn must be {env: NAME}",
        ),
        ("  backend: postgres\n", "leviathan.yaml:5: event_log.dsn is required for backend 'postgres'"),
        ("  path: ''\n", "leviathan.yaml:5: event_log.path must be a file path, got ''"),
        (
            "  backend: postgres\n  dsn: {env: X}\n  table_prefix: Audit-Log\n",
            "leviathan.yaml:7: event_log.table_prefix must be a lowercase SQL name",
        ),
    ],
    ids=["unknown-backend", "literal-dsn", "bad-env-name", "missing-dsn", "empty-path", "bad-prefix"],
)
def test_errors_name_line_field_and_fix(section: str, expected: str) -> None:
    problems = problems_of(TARGETS + "event_log:\n" + section)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_a_section_that_is_not_a_mapping() -> None:
    assert problems_of(TARGETS + "event_log: postgres\n")[0].startswith(
        "leviathan.yaml:4: 'event_log' must be a mapping, got 'postgres'"
    )


def test_unknown_and_unused_keys_are_warnings() -> None:
    config = parse(TARGETS + "event_log:\n  dsn: {env: X}\n  colour: blue\n")
    assert sorted(config.warnings) == [
        "leviathan.yaml:5: event_log.dsn is ignored by backend 'ndjson'",
        "leviathan.yaml:6: unknown field 'event_log.colour' is ignored "
        "(known: backend, dsn, path, table_prefix)",
    ]


# -- opening the configured backend ------------------------------------------------------------------


def test_open_event_log_defaults_to_ndjson_under_the_home(tmp_path: Path) -> None:
    home = LeviathanHome(tmp_path)
    for settings in (None, EventLogSettings()):
        store = open_event_log(home, settings)
        assert isinstance(store, NdjsonEventLog) and store.path == home.events_path


def test_open_event_log_ndjson_at_a_configured_path(tmp_path: Path) -> None:
    store = open_event_log(LeviathanHome(tmp_path), EventLogSettings(path=str(tmp_path / "x.ndjson")))
    assert isinstance(store, NdjsonEventLog) and store.path == tmp_path / "x.ndjson"


def test_an_unknown_backend_cannot_even_be_constructed() -> None:
    # The typed model refuses it when it is built, before any code could try to open it.
    with pytest.raises(ValidationError, match=r"backend\n  Input should be 'ndjson' or 'postgres'"):
        EventLogSettings(backend="pgsql")


def test_open_event_log_postgres_needs_its_dsn_variable(tmp_path: Path) -> None:
    settings = EventLogSettings(backend="postgres", dsn_env="LOG_DSN")
    with pytest.raises(ConfigError, match="environment variable LOG_DSN is not set"):
        open_event_log(LeviathanHome(tmp_path), settings, environ={})
    with pytest.raises(ConfigError, match="event_log.dsn is required"):
        open_event_log(LeviathanHome(tmp_path), EventLogSettings(backend="postgres"), environ={})
