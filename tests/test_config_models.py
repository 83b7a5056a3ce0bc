"""The typed config models: what they refuse when built in code, and how their errors reach the user
as ``file:line: who: message. Fix: ...`` through the YAML node each value came from."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydantic import ValidationError

from leviathan_dagster.core.config.errors import field_at
from leviathan_dagster.core.config.project import parse_project_config
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.models import Policy, ProjectConfig, TargetConfig
from worker.environment import WorkerEnv

SRC = "leviathan.yaml"
TARGET = "targets:\n  - id: t\n    repo_url: /repos/t.git\n"


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_project_config(text, SRC, base_dir=Path("/srv"))
    return str(info.value).splitlines()


def test_the_models_refuse_bad_values_when_built_in_code() -> None:
    with pytest.raises(ValidationError, match="max_open_prs"):
        Policy(max_open_prs=0)
    with pytest.raises(ValidationError, match="unexpected keyword argument|max_open_pr\\b"):
        Policy(max_open_pr=1)  # type: ignore[call-arg]
    target = TargetConfig("t", "/repos/t.git")
    with pytest.raises(ValidationError, match="forge"):
        dataclasses.replace(target, forge="gitlab")
    assert dataclasses.replace(target, policy=Policy(max_open_prs=3)).policy.max_open_prs == 3


def test_code_may_name_a_secret_by_its_variable_but_a_file_may_not() -> None:
    assert dict(TargetConfig("t", "/r", secret_env={"github_token": "GH"}).secret_env) == {
        "github_token": "GH"
    }
    [problem] = problems_of(TARGET + "    secrets: {github_token: GH}\n")
    assert problem.startswith(f"{SRC}:4: target 't': secret 'github_token' is written literally")


def test_every_section_reports_at_once_in_the_files_order() -> None:
    text = (
        "event_log: {backend: pgsql}\n"  # 1
        "kubernetes:\n"
        "  namespace: Bad_NS\n"  # 3
        "control_plane:\n"
        "  tokns: []\n"  # 5: a typo, now an error like everywhere else
        "defaults:\n"
        "  max_open_prs: 0\n" + TARGET + "    github: {timeout_seconds: 0}\n"  # 7  # 11
        "    policy:\n"
        "      backoff_seconds: -1\n"  # 13
        "    branch: 'a b'\n"  # 14
    )
    problems = problems_of(text)
    lines = [int(p.split(":")[1]) for p in problems]
    assert lines == [1, 3, 5, 7, 11, 13, 14], problems
    assert "field 'control_plane.tokns' is unknown (did you mean tokens?)" in problems[2]
    assert problems[3].startswith(f"{SRC}:7: defaults: policy 'max_open_prs' must be an integer from 1")
    assert all(". Fix: " in p for p in problems), problems


def test_a_policy_value_from_defaults_is_the_files_problem_even_with_isolation() -> None:
    text = "defaults:\n  backoff_seconds: -5\n" + TARGET
    with pytest.raises(ConfigError, match=r"leviathan.yaml:2: defaults: policy 'backoff_seconds'"):
        parse_project_config(text, SRC, base_dir=Path("/srv"), isolate_targets=True)


def test_loader_results_are_not_keys_of_the_file() -> None:
    config = parse_project_config("warnings: [x]\n" + TARGET, SRC, base_dir=Path("/srv"))
    assert config.warnings == (f"{SRC}:1: unknown top-level key 'warnings' is ignored",)
    assert isinstance(config, ProjectConfig) and config.source == SRC


def test_a_missing_key_is_named_as_the_file_spells_it() -> None:
    text = "control_plane:\n  tokens:\n    - {name: alice, role: operator}\n" + TARGET
    [problem] = problems_of(text)
    assert problem.startswith(f"{SRC}:3: required field 'secret' is missing. Fix: add 'secret:'"), problem


def test_a_list_item_error_names_the_items_line() -> None:
    text = TARGET + "    policy:\n      allowed_path_prefixes:\n        - docs/\n        - /etc/\n"
    [problem] = problems_of(text)
    assert problem.startswith(f"{SRC}:7: target 't': policy 'allowed_path_prefixes' has a bad entry")


def test_field_at_follows_the_loc_through_nested_models_and_aliases() -> None:
    assert field_at(TargetConfig, ("policy", "max_open_prs"))[0] == "max_open_prs"
    assert field_at(TargetConfig, ("secrets", "github_token"))[0] == "secret_env"
    assert field_at(ProjectConfig, ("control_plane", "tokens", 0, "secret"))[0] == "secret_env"


CONTRACT = {
    "TARGET_NAME": "t",
    "TARGET_REPO_URL": "/r",
    "TARGET_BRANCH": "main",
    "TASK_ID": "a",
    "ATTEMPT_ID": "x",
}


def test_the_worker_environment_is_read_by_the_shared_typed_reader(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the worker needs TARGET_BRANCH, TASK_ID; the executor sets these"):
        WorkerEnv.from_environ({"TARGET_NAME": "t", "TARGET_REPO_URL": "/r", "ATTEMPT_ID": "x"})
    env = WorkerEnv.from_environ({**CONTRACT, "LEVIATHAN_HOME": str(tmp_path), "CONTROL_PLANE_TOKEN": "tok"})
    assert env.workspace_root == tmp_path / "workspaces" and env.attempt_number == 1
    assert "tok" not in repr(env)
    bad = {**CONTRACT, "ATTEMPT_NUMBER": "0", "LEVIATHAN_EVENT_LOG_AFTER_SEQ": "x"}
    with pytest.raises(ConfigError) as raised:
        WorkerEnv.from_environ(bad)
    assert str(raised.value).splitlines() == [
        "ATTEMPT_NUMBER must be an integer >= 1, got '0'",
        "LEVIATHAN_EVENT_LOG_AFTER_SEQ must be an integer >= 0, got 'x'",
    ]


def test_a_broken_file_reports_the_isolated_targets_problems_too() -> None:
    # The commands load with isolate_targets; when the file itself is broken (exit 2), the targets'
    # own problems are part of the one report, so a single `leviathan validate` shows everything.
    text = "event_log: {backend: pgsql}\n" + TARGET + "    branch: 'a b'\n    max_open_prs: 0\n"
    with pytest.raises(ConfigError) as raised:
        parse_project_config(text, SRC, base_dir=Path("/srv"), isolate_targets=True)
    assert [p.split(": ", 1)[0] for p in str(raised.value).splitlines()] == [
        f"{SRC}:1",
        f"{SRC}:5",
        f"{SRC}:6",
    ]
