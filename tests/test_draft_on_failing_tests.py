"""Policy ``allow_draft_on_failing_tests``: a failing final test run opens a DRAFT PR labelled failing (the
attempt succeeds as ``tests: failed (draft)``) on the local forge and on the GitHub double; without the key
the attempt fails as ``tests_failed`` and nothing is pushed. The key parses only as a YAML boolean."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from anthropic_double import AnthropicDouble, reply, text, tool_use
from support import Project, backlog_yaml, docs_task, make_project, run_worker
from test_claude_generator import claude_project, run_claude_worker
from test_github_worker import TOKEN_ENV, setup  # noqa: F401 (a fixture, used by name)

from leviathan_dagster.core.config.project import parse_project_config
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.forge.local import LocalForge
from worker.attempt import EXIT_CODES

FAILING = [
    sys.executable,
    "-c",
    "print('test_intro FAILED'); print('1 failed in 0.01s'); raise SystemExit(1)",
]


def local_project(tmp_path: Path, **policy) -> Project:
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("intro")), "README.md": "# site\n"}
    policy = {"allowed_path_prefixes": [".leviathan/", "docs/"], **policy}
    return make_project(tmp_path, {"site": {"files": files, "test_command": FAILING, "policy": policy}})


def succeeded(project: Project) -> dict:
    [event] = [e for e in project.events().read() if e.event_type == "attempt.succeeded"]
    return event.payload


def test_the_key_defaults_to_false_and_parses_only_as_a_boolean(tmp_path: Path) -> None:
    def parse(policy: str):
        text = f"targets:\n  - id: t\n    repo_url: ./t.git\n    policy:\n{policy}"
        return parse_project_config(text, "leviathan.yaml", base_dir=tmp_path).targets[0].policy

    assert parse("      max_open_prs: 1\n").allow_draft_on_failing_tests is False
    assert parse("      allow_draft_on_failing_tests: true\n").allow_draft_on_failing_tests is True
    assert parse("      allow_draft_on_failing_tests: false\n").allow_draft_on_failing_tests is False
    for bad in ('"true"', "1"):
        with pytest.raises(
            ConfigError, match=r"leviathan.yaml:5: .*'allow_draft_on_failing_tests' must be true"
        ):
            parse(f"      allow_draft_on_failing_tests: {bad}\n")


def test_failing_tests_open_a_labelled_draft_on_the_local_forge_when_allowed(tmp_path: Path) -> None:
    project = local_project(tmp_path, allow_draft_on_failing_tests=True)
    proc = run_worker(project, "site", "intro", "attempt-d1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [pr] = LocalForge("site", str(project.repo("site")), project.home.root).list_pull_requests("open")
    assert pr.draft is True and pr.head == "agent/intro-attempt-d1"
    assert "**Tests are failing.**" in pr.body and "- tests: failed (draft)\n" in pr.body
    assert "(exit 1)" in pr.body and "  - summary: `1 failed in 0.01s`" in pr.body
    assert succeeded(project)["tests"] == "failed (draft)"


def test_failing_tests_fail_the_attempt_without_the_key(tmp_path: Path) -> None:
    project = local_project(tmp_path)
    proc = run_worker(project, "site", "intro", "attempt-d2")
    assert proc.returncode == EXIT_CODES["tests_failed"], proc.stdout + proc.stderr
    [failed] = [e for e in project.events().read() if e.event_type == "attempt.failed"]
    assert failed.payload["failure_type"] == "tests_failed"
    assert project.branches("site") == ["main"]
    assert LocalForge("site", str(project.repo("site")), project.home.root).list_pull_requests("all") == []


def test_claude_out_of_repair_rounds_becomes_a_draft_when_allowed(tmp_path: Path) -> None:
    project = claude_project(tmp_path, max_repair_rounds=0, allow_draft_on_failing_tests=True)
    edit = tool_use(
        "str_replace_based_edit_tool",
        command="str_replace",
        path="lib/textutil.py",
        old_str="return text",
        new_str="return text.strip()",
    )
    with AnthropicDouble([reply(edit), reply(text("Done."))]) as api:
        proc = run_claude_worker(project, api, "attempt-d3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [pr] = LocalForge("site", str(project.repo("site")), project.home.root).list_pull_requests("open")
    assert (
        pr.draft is True and "- tests: failed (draft)" in pr.body and "failed" in pr.body.split("summary:")[1]
    )
    assert "- model: `claude-sonnet-4-6`, 2 call(s)" in pr.body
    assert succeeded(project)["usage"]["calls"] == 2


def test_failing_tests_open_a_draft_on_github_when_allowed(setup) -> None:  # noqa: F811
    gh, project, token = setup
    config = yaml.safe_load(project.config_path.read_text())
    config["targets"][0].update(test_command=FAILING, policy={"allow_draft_on_failing_tests": True})
    project.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    proc = run_worker(
        project,
        "site",
        "intro",
        "attempt-d4",
        TARGET_REPO_URL=gh.repo_url("acme", "site"),
        **{TOKEN_ENV: token},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [pr] = gh.pulls("acme", "site")
    assert pr.draft is True and pr.head == "agent/intro-attempt-d4"
    assert "**Tests are failing.**" in pr.body and "- tests: failed (draft)" in pr.body
    assert succeeded(project)["tests"] == "failed (draft)"


def test_a_repository_without_drafts_gets_the_pr_ready_for_review_with_a_note(setup) -> None:  # noqa: F811
    # A private repository on GitHub Free/Pro answers a draft with 422: the attempt must not fail after
    # its branch was pushed. The PR opens ready for review, its body and a comment say tests fail.
    gh, project, token = setup
    gh.state.repos["acme/site"].drafts_supported = False
    config = yaml.safe_load(project.config_path.read_text())
    config["targets"][0].update(test_command=FAILING, policy={"allow_draft_on_failing_tests": True})
    project.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    proc = run_worker(
        project,
        "site",
        "intro",
        "attempt-d5",
        TARGET_REPO_URL=gh.repo_url("acme", "site"),
        **{TOKEN_ENV: token},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [pr] = gh.pulls("acme", "site")
    assert pr.draft is False and "**Tests are failing.**" in pr.body
    [note] = gh.state.repos["acme/site"].comments[pr.number]
    assert "does not support draft pull requests" in note["body"]
    assert gh.count("POST", "/repos/acme/site/pulls") == 2  # the draft (422), then once without
    assert succeeded(project)["tests"] == "failed (draft)"
