"""Opening and promoting PRs on GitHub as GitHub really answers: drafts a plan does not have, reviewer
requests refused after the PR is open, a PR GitHub says already exists, and draft_until_green judged
on check runs (what GitHub Actions reports) as well as commit statuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from github_double import GithubDouble, stale_read
from github_double.state import Pull
from test_github_forge import KEY_ENV, TOKEN_ENV, body_for, make_forge, push_branch, target_for

from leviathan_dagster.core.errors import ConflictError, NotFoundError
from leviathan_dagster.core.forge.github.forge import GithubForge


@pytest.fixture
def gh(tmp_path: Path):
    with GithubDouble(tmp_path / "github") as double:
        double.add_repo("acme", "site", {"README.md": "# site\n"}, collaborators={"alice"}, teams={"docs"})
        yield double


@pytest.fixture
def forge(gh: GithubDouble):
    gh.add_token("ghp_" + "t0ken" * 7 + "x")
    return make_forge(gh, {TOKEN_ENV: "ghp_" + "t0ken" * 7 + "x"}, draft_until_green=True)


def comments(gh: GithubDouble, number: int) -> list[str]:
    return [c["body"] for c in gh.state.repos["acme/site"].comments.get(number, [])]


def test_draft_unsupported_is_retried_once_without_draft(gh, forge, tmp_path) -> None:
    gh.state.repos["acme/site"].drafts_supported = False
    push_branch(forge, tmp_path / "w", "agent/a-1")
    pr = forge.open_pull_request(head="agent/a-1", base="main", title="A", body=body_for("a"), draft=True)
    assert (pr.state, pr.draft) == ("open", False)
    assert gh.count("POST", "/repos/acme/site/pulls") == 2
    assert any("does not support draft pull requests" in c for c in comments(gh, pr.number))


def test_other_422s_on_create_still_fail(gh, forge, tmp_path) -> None:
    push_branch(forge, tmp_path / "w", "agent/a-1")
    # A missing branch is NotFoundError, as on every forge (tests/forge_contract.py); never a retry.
    with pytest.raises(NotFoundError, match="base is invalid.*base branch does not exist"):
        forge.open_pull_request(head="agent/a-1", base="nope", title="A", body=body_for("a"))
    assert gh.count("POST", "/repos/acme/site/pulls") == 1


def test_reviewer_403_leaves_the_pr_open_and_records_why_on_it(gh, tmp_path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    gh.add_app(42, public, {7: {"acme/site"}})  # no organization "members" permission: no teams
    forge = GithubForge(
        target_for(gh, app_id=42, installation_id=7),
        {KEY_ENV: private},
        seconds_between_writes=0,
        seconds_between_requests=0,
    )
    push_branch(forge, tmp_path / "w", "agent/a-1")
    pr = forge.open_pull_request(
        head="agent/a-1", base="main", title="A", body=body_for("a"), reviewers=["acme/docs"]
    )
    assert pr.state == "open" and pr.reviewers == ()
    [note] = comments(gh, pr.number)
    assert "acme/docs" in note and "403 Resource not accessible by integration" in note
    assert "Members (read)" in note
    forge.close()


def test_already_exists_adopts_the_open_pr_with_the_tasks_marker(gh, forge, tmp_path) -> None:
    push_branch(forge, tmp_path / "w", "agent/a-1")
    repo = gh.state.repos["acme/site"]
    # Created by an earlier try whose answer was lost; GitHub's lists do not show it yet.
    repo.pulls[1] = Pull(1, 501, "A", body_for("a"), "agent/a-1", "main", False, "leviathan-bot", 0, 0)
    gh.faults.add(stale_read("GET", r"/repos/acme/site/pulls$", times=2))
    pr = forge.open_pull_request(head="agent/a-1", base="main", title="A", body=body_for("a"))
    assert pr.number == 1 and len(gh.pulls("acme", "site")) == 1
    assert ("POST", "/api/v3/repos/acme/site/pulls", 422) in gh.requests


def test_already_exists_for_another_task_is_a_conflict(gh, forge, tmp_path) -> None:
    push_branch(forge, tmp_path / "w", "agent/a-1")
    repo = gh.state.repos["acme/site"]
    repo.pulls[1] = Pull(1, 501, "Human", "no marker", "agent/a-1", "main", False, "alice", 0, 0)
    gh.faults.add(stale_read("GET", r"/repos/acme/site/pulls$", times=2))
    with pytest.raises(ConflictError, match="A pull request already exists"):
        forge.open_pull_request(head="agent/a-1", base="main", title="A", body=body_for("a"))


def open_draft(gh: GithubDouble, forge: GithubForge, work: Path, task: str) -> tuple[int, str]:
    push_branch(forge, work, f"agent/{task}-1", name=f"docs/{task}.md")
    pr = forge.open_pull_request(head=f"agent/{task}-1", base="main", title=task, body=body_for(task))
    assert pr.draft
    return pr.number, gh.state.branch_sha(gh.state.repos["acme/site"], f"agent/{task}-1")


def test_draft_until_green_reads_check_runs_and_statuses(gh, forge, tmp_path) -> None:
    work = tmp_path / "w"
    actions, _ = open_draft(gh, forge, work, "actions")  # Actions only: combined status "pending"
    gh.add_check_run("acme", "site", _, "build", conclusion="failure")
    gh.add_check_run("acme", "site", _, "build", conclusion="success")  # re-run: the latest counts
    gh.add_check_run("acme", "site", _, "lint", conclusion="skipped")
    running, sha = open_draft(gh, forge, work, "running")
    gh.add_check_run("acme", "site", sha, "build", status="in_progress", conclusion=None)
    failing, sha = open_draft(gh, forge, work, "failing")
    gh.add_check_run("acme", "site", sha, "build", conclusion="success")
    gh.add_check_run("acme", "site", sha, "e2e", conclusion="timed_out")
    mixed, sha = open_draft(gh, forge, work, "mixed")  # the check passed, a legacy status failed
    gh.add_check_run("acme", "site", sha, "build", conclusion="success")
    gh.rest.create_status(
        next(iter(gh.state.tokens.values())), "acme", "site", sha, query={}, body={"state": "failure"}
    )
    silent, _ = open_draft(gh, forge, work, "silent")  # nothing reported yet: CI may not have started

    promoted = forge.ready_green_drafts()
    assert [pr.number for pr in promoted] == [actions] and not promoted[0].draft
    drafts = {pr.number: pr.draft for pr in gh.pulls("acme", "site")}
    assert drafts == {actions: False, running: True, failing: True, mixed: True, silent: True}
