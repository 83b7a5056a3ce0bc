"""End to end in Dagster on a temporary instance: the sensor selects a ``executor: claude`` task of a
GitHub-hosted target, the worker runs Claude (the Messages double) which fixes a failing test in one repair
round, and the PR is opened on the GitHub double with the right branch, body and marker; the token totals
are in the attempt's events and the run's metadata, the token and the model's text nowhere."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from anthropic_double import AnthropicDouble, reply, text
from github_double import GithubDouble
from support import Project, backlog_yaml
from test_claude_generator import BUGGY, MODEL, REPLY_SENTINEL, TESTS, claude_task, edit

from leviathan_dagster.cli.dagster_cycle import run_cycle
from leviathan_dagster.core.attempts.markers import render_task_marker
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.defs.platform.resources import LeviathanResource

pytestmark = pytest.mark.dagster

TOKEN_ENV = "LEVIATHAN_E2E_CLAUDE_GITHUB_TOKEN"
HYPHEN, FIXED = 'return text.replace(" ", "-")', 'return text.lower().replace(" ", "-")'


def github_project(tmp_path: Path, gh: GithubDouble) -> Project:
    files = {
        ".leviathan/backlog.yaml": backlog_yaml(claude_task()),
        "lib/__init__.py": "",
        "lib/textutil.py": BUGGY,
        "tests/test_textutil.py": TESTS,
    }
    gh.add_repo("owner", "repo", files)
    root = tmp_path / "project"
    root.mkdir()
    target = {
        "id": "site",
        "repo_url": gh.repo_url("owner", "repo"),  # http://127.0.0.1:<port>/owner/repo.git
        "forge": "github",
        "github": {"api_url": gh.api_url},
        "secrets": {"github_token": {"env": TOKEN_ENV}},
        "test_command": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        "policy": {"allowed_path_prefixes": [".leviathan/", "lib/", "tests/"]},
    }
    config = root / "leviathan.yaml"
    config.write_text(yaml.safe_dump({"targets": [target]}, sort_keys=False), encoding="utf-8")
    return Project(root=root, home=LeviathanHome(root / "home"), config_path=config)


def test_sensor_to_claude_fix_to_pr_on_github(tmp_path: Path, monkeypatch) -> None:
    token = "ghp_" + secrets.token_hex(18)
    script = [
        reply(edit("str_replace", path="lib/textutil.py", old_str="return text", new_str=HYPHEN)),
        reply(text(REPLY_SENTINEL)),  # ends its turn: the harness runs the tests, which fail
        reply(edit("str_replace", path="lib/textutil.py", old_str=HYPHEN, new_str=FIXED)),
        reply(text("Lower-cased too.")),  # repair round 1: the tests pass
    ]
    with GithubDouble(tmp_path / "github") as gh, AnthropicDouble(script) as api:
        gh.add_token(token)
        project = github_project(tmp_path, gh)
        # The launched worker inherits these; the token reaches git and PyGithub only through the forge.
        monkeypatch.setenv(TOKEN_ENV, token)
        monkeypatch.setenv("LEVIATHAN_CLAUDE_API_KEY", api.api_key)
        monkeypatch.setenv("LEVIATHAN_CLAUDE_MODEL", MODEL)
        monkeypatch.setenv("LEVIATHAN_CLAUDE_BASE_URL", api.base_url)
        resource = LeviathanResource(config_path=str(project.config_path), home=str(project.home.root))
        with dg.instance_for_test() as instance:
            report = run_cycle(instance, resource, echo=lambda _: None)
            [(key, run_id, ok)] = report.launched
            assert key == "site/slug:1" and ok, instance.all_logs(run_id)[-5:]
            materialization = instance.get_latest_materialization_event(dg.AssetKey("attempt_outcomes"))
            metadata = materialization.asset_materialization.metadata
        assert api.errors == [] and len(api.requests) == 4

        [pr] = gh.pulls("owner", "repo")
        repo = gh.state.repos["owner/repo"]
        assert pr.state == "open" and pr.base == "main" and pr.draft is False
        assert pr.head.startswith("agent/slug-attempt-")
        assert FIXED in gh.state.git(repo, "show", f"{pr.head}:lib/textutil.py").stdout
        backlog = gh.state.git(repo, "show", f"{pr.head}:.leviathan/backlog.yaml").stdout
        assert "status: completed" in backlog
        assert pr.title == "[leviathan] Fix slugify"
        assert render_task_marker("site", "slug") in pr.body
        assert "`lib/textutil.py` modified" in pr.body and "- generator: `claude`" in pr.body
        assert "- tests: passed\n" in pr.body and "  - summary: `2 passed" in pr.body
        assert f"- model: `{MODEL}`, 4 call(s)" in pr.body
        assert REPLY_SENTINEL not in pr.body and "Lower-cased too" not in pr.body

    events = list(project.events().read())
    [succeeded] = [e for e in events if e.event_type == "attempt.succeeded"]
    usage = succeeded.payload["usage"]
    assert usage["calls"] == 4 and usage["model"] == MODEL and usage["total_tokens"] > 0
    assert succeeded.payload["branch_name"] == pr.head and succeeded.payload["pr_number"] == pr.number
    assert [e.event_type for e in events if e.event_type == "pr.created"] == ["pr.created"]
    assert metadata["model_calls"].value == 4 and metadata["input_tokens"].value == usage["input_tokens"]

    haystack = project.home.events_path.read_text()
    haystack += "".join(p.read_text(errors="replace") for p in project.home.root.rglob("*") if p.is_file())
    for secret in (token, api.api_key, REPLY_SENTINEL, "Lower-cased too"):
        assert secret not in haystack, secret
