"""End to end against the GitHub double: ``python -m worker`` clones and pushes over git smart HTTP with
the token, opens the PR through PyGithub (a 502 on the create is retried into exactly one PR), and the
token appears nowhere: not in logs, events, artifacts, the workspace's ``.git/config``, mirrors or errors.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from github_double import GithubDouble, server_error
from support import Project, backlog_yaml, docs_task, run_worker

from leviathan_dagster.core.attempts.markers import render_task_marker
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.failures import counts_against_task
from leviathan_dagster.core.forge.registry import forge_for
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.scheduling.cycle import read_backlog
from worker.attempt import EXIT_CODES

TOKEN_ENV = "LEVIATHAN_E2E_GITHUB_TOKEN"
# The test command fails if it can see any credential: the worker must run it with a clean environment.
CREDENTIAL_PROBE = (
    "import os, sys; "
    "leaks = [k for k, v in os.environ.items() if k.startswith('GIT_CONFIG') or v.startswith('ghp_')]; "
    "sys.exit(1 if leaks else 0)"
)


@pytest.fixture
def setup(tmp_path: Path):
    token = "ghp_" + secrets.token_hex(18)
    with GithubDouble(tmp_path / "github") as gh:
        files = {
            ".leviathan/backlog.yaml": backlog_yaml(docs_task("intro", owner="@alice")),
            "README.md": "# site\n",
        }
        gh.add_repo("acme", "site", files, collaborators={"alice"})
        gh.add_token(token)
        root = tmp_path / "project"
        root.mkdir()
        config = root / "leviathan.yaml"
        target = {
            "id": "site",
            "repo_url": gh.repo_url("acme", "site"),
            "forge": "github",
            "github": {"api_url": gh.api_url},
            "secrets": {"github_token": {"env": TOKEN_ENV}},
            "test_command": [sys.executable, "-c", CREDENTIAL_PROBE],
        }
        config.write_text(yaml.safe_dump({"targets": [target]}, sort_keys=False), encoding="utf-8")
        project = Project(root=root, home=LeviathanHome(root / "home"), config_path=config)
        yield gh, project, token


def test_worker_clones_pushes_and_opens_one_pr_despite_a_502_and_never_leaks_the_token(setup) -> None:
    gh, project, token = setup
    gh.faults.add(server_error("POST", r"/repos/acme/site/pulls$", after=True))
    proc = run_worker(
        project,
        "site",
        "intro",
        "attempt-gh1",
        TARGET_REPO_URL=gh.repo_url("acme", "site"),
        LEVIATHAN_WORKSPACE_DIR=str(project.root / "workspaces"),
        **{TOKEN_ENV: token},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    [pr] = gh.pulls("acme", "site")
    assert pr.head == "agent/intro-attempt-gh1" and pr.base == "main" and pr.state == "open"
    assert render_task_marker("site", "intro") in pr.body and "- tests: passed" in pr.body
    assert pr.requested_reviewers == ["alice"]
    assert gh.count("POST", "/repos/acme/site/pulls") == 1  # the lost answer was found, not re-posted
    repo = gh.state.repos["acme/site"]
    shown = gh.state.git(repo, "show", f"{pr.head}:.leviathan/backlog.yaml").stdout
    assert "status: completed" in shown and "attempt_id: attempt-gh1" in shown
    events = [e.event_type for e in project.events().read()]
    assert events[-2:] == ["pr.created", "attempt.succeeded"]

    _assert_token_nowhere(token, project, proc)


def test_push_refused_by_branch_protection_is_counted_with_githubs_message(setup) -> None:
    gh, project, token = setup
    gh.reject_next_push("GH006: Protected branch update failed for refs/heads/agent/intro-attempt-gh2.")
    proc = run_worker(
        project,
        "site",
        "intro",
        "attempt-gh2",
        TARGET_REPO_URL=gh.repo_url("acme", "site"),
        **{TOKEN_ENV: token},
    )
    assert proc.returncode == EXIT_CODES["push_rejected"], proc.stdout + proc.stderr
    [failed] = [e for e in project.events().read() if e.event_type == "attempt.failed"]
    assert failed.payload["failure_type"] == "push_rejected"  # counts: a retry would be refused again
    summary = failed.payload["error_summary"]
    assert "GH006: Protected branch update failed" in summary and "protected branch hook declined" in summary
    assert counts_against_task("push_rejected")
    assert gh.pulls("acme", "site") == []
    _assert_token_nowhere(token, project, proc)


def test_push_failing_with_a_5xx_is_an_infrastructure_failure(setup) -> None:
    gh, project, token = setup
    gh.faults.add(server_error("POST", r"/git-receive-pack$", status=502))
    proc = run_worker(
        project,
        "site",
        "intro",
        "attempt-gh4",
        TARGET_REPO_URL=gh.repo_url("acme", "site"),
        **{TOKEN_ENV: token},
    )
    assert proc.returncode == EXIT_CODES["infrastructure"], proc.stdout + proc.stderr
    [failed] = [e for e in project.events().read() if e.event_type == "attempt.failed"]
    assert failed.payload["failure_type"] == "infrastructure"
    assert "502" in failed.payload["error_summary"]
    assert not counts_against_task("infrastructure")
    _assert_token_nowhere(token, project, proc)


def test_backlog_is_read_through_a_mirror_with_the_forge_credential(setup, monkeypatch) -> None:
    gh, project, token = setup
    monkeypatch.setenv(TOKEN_ENV, token)
    target = load_project_config(project.config_path).target("site")
    snapshot = read_backlog(target, project.home)
    assert snapshot.error is None and [t.id for t in snapshot.backlog.tasks] == ["intro"]
    forge = forge_for(target, project.home)
    assert forge.open_agent_pull_requests() == []
    _assert_token_nowhere(token, project, None)


def test_missing_token_fails_the_attempt_with_the_fix(setup) -> None:
    gh, project, _ = setup
    proc = run_worker(project, "site", "intro", "attempt-gh3", TARGET_REPO_URL=gh.repo_url("acme", "site"))
    assert proc.returncode == 6, proc.stdout + proc.stderr
    [failed] = [e for e in project.events().read() if e.event_type == "attempt.failed"]
    assert f"environment variable {TOKEN_ENV} is empty" in failed.payload["error_summary"]


def _assert_token_nowhere(token: str, project: Project, proc: subprocess.CompletedProcess | None) -> None:
    """The token, and the Basic header git would carry, appear in no file under the project (home:
    events, artifacts, workspaces, mirrors and their .git/config) and in no output of the worker."""
    import base64

    needles = [token, base64.b64encode(f"x-access-token:{token}".encode()).decode()]
    scanned = 0
    for path in project.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            scanned += 1
            for needle in needles:
                assert needle.encode() not in data, f"credential found in {path}"
    assert scanned > 3
    configs = list(project.root.rglob("config"))
    for config in configs:
        assert "x-access-token" not in config.read_text(errors="replace")
    if proc is not None:
        for needle in needles:
            assert needle not in proc.stdout and needle not in proc.stderr


def test_app_without_workflows_permission_fails_the_attempt_as_push_rejected(tmp_path: Path) -> None:
    # The case that looped forever: each retry paid for the generator again and never counted.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with GithubDouble(tmp_path / "github") as gh:
        task = docs_task("ci", allowed_paths=[".github/workflows/"])
        gh.add_repo("acme", "site", {".leviathan/backlog.yaml": backlog_yaml(task), "README.md": "# site\n"})
        gh.add_app(42, public, {7: {"acme/site"}})  # contents + pull requests, no workflows
        root = tmp_path / "project"
        root.mkdir()
        config = root / "leviathan.yaml"
        target = {
            "id": "site",
            "repo_url": gh.repo_url("acme", "site"),
            "forge": "github",
            "github": {"api_url": gh.api_url, "app_id": 42, "installation_id": 7},
            "secrets": {"github_app_private_key": {"env": "LEVIATHAN_E2E_APP_KEY"}},
            "policy": {"allowed_path_prefixes": [".leviathan/", ".github/"]},
        }
        config.write_text(yaml.safe_dump({"targets": [target]}, sort_keys=False), encoding="utf-8")
        project = Project(root=root, home=LeviathanHome(root / "home"), config_path=config)
        proc = run_worker(
            project,
            "site",
            "ci",
            "attempt-wf1",
            TARGET_REPO_URL=gh.repo_url("acme", "site"),
            LEVIATHAN_E2E_APP_KEY=private,
        )
        assert proc.returncode == EXIT_CODES["push_rejected"], proc.stdout + proc.stderr
        [failed] = [e for e in project.events().read() if e.event_type == "attempt.failed"]
        assert failed.payload["failure_type"] == "push_rejected"
        assert (
            "refusing to allow a GitHub App to create or update workflow `.github/workflows/ci.md` "
            "without `workflows` permission" in failed.payload["error_summary"]
        )
        assert gh.pulls("acme", "site") == []
        for token in gh.state.issued_installation_tokens:
            assert token not in proc.stdout + proc.stderr + json.dumps(failed.payload)
