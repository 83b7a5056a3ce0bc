"""The GitHub double cannot drift from GitHub: every response body of every endpoint the forge uses is
validated against GitHub's published REST description, through githubkit's pydantic models (generated
from GitHub's OpenAPI description: API version 2022-11-28, the one PyGithub gets by default, and the newest).

Each endpoint is exercised for real (HTTP against the running double), successes and the errors the
forge branches on (404, 405, 409, 422 validation, 422 draft, 403 reviewer, 401, secondary limit).
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from github_double import GithubDouble, secondary_rate_limit

TypeAdapter = pytest.importorskip("pydantic").TypeAdapter
# 2022-11-28: what PyGithub gets (it sends no X-GitHub-Api-Version); 2026-03-10: the newest description.
VERSIONS = ("v2022_11_28", "v2026_03_10")


@pytest.fixture(params=VERSIONS)
def models(request):
    return pytest.importorskip(f"githubkit_schemas.{request.param}.models")


class Client:
    """Raw HTTP to the double: the exact bodies it answers, nothing parsed away."""

    def __init__(self, gh: GithubDouble, credential: str) -> None:
        self.gh, self.credential = gh, credential

    def __call__(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.gh.api_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.credential}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request) as answer:
                raw = answer.read()
                return answer.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())


def valid(model, payload: object) -> None:
    """``payload`` as GitHub's schema for ``model`` (a class, or list[...]) allows it."""
    TypeAdapter(model).validate_python(payload, strict=False)


@pytest.fixture
def gh(tmp_path: Path):
    with GithubDouble(tmp_path / "github") as double:
        double.add_repo("acme", "site", {"README.md": "# site\n"}, collaborators={"alice"}, teams={"docs"})
        yield double


@pytest.fixture
def api(gh: GithubDouble) -> Client:
    token = "ghp_" + secrets.token_hex(18)
    gh.add_token(token)
    return Client(gh, token)


def branch(gh: GithubDouble, name: str, text: str = "x") -> str:
    repo = gh.state.repos["acme/site"]
    tree = gh.state.git(repo, "rev-parse", "main^{tree}").stdout.strip()
    commit = gh.state.git(repo, "commit-tree", "-p", "main", "-m", text, tree).stdout.strip()
    gh.state.git(repo, "update-ref", f"refs/heads/{name}", commit)
    return commit


def test_repository_and_rate_limit(api, models) -> None:
    status, repo = api("GET", "/repos/acme/site")
    assert status == 200
    valid(models.FullRepository, repo)
    status, limits = api("GET", "/rate_limit")
    assert status == 200
    valid(models.RateLimitOverview, limits)


def test_pull_request_lifecycle_bodies(gh, api, models) -> None:
    sha = branch(gh, "agent/a-1")
    status, created = api(
        "POST", "/repos/acme/site/pulls", {"head": "agent/a-1", "base": "main", "title": "A", "body": "b"}
    )
    assert status == 201
    valid(models.PullRequest, created)
    status, listed = api("GET", "/repos/acme/site/pulls?state=all&per_page=100")
    assert status == 200 and len(listed) == 1
    valid(list[models.PullRequestSimple], listed)
    status, one = api("GET", "/repos/acme/site/pulls/1")
    valid(models.PullRequest, one)
    status, requested = api(
        "POST",
        "/repos/acme/site/pulls/1/requested_reviewers",
        {"reviewers": ["alice"], "team_reviewers": ["docs"]},
    )
    assert status == 201
    valid(models.PullRequestSimple, requested)
    status, comment = api("POST", "/repos/acme/site/issues/1/comments", {"body": "note"})
    assert status == 201
    valid(models.IssueComment, comment)
    status, comments = api("GET", "/repos/acme/site/issues/1/comments")
    valid(list[models.IssueComment], comments)
    status, posted = api("POST", f"/repos/acme/site/statuses/{sha}", {"state": "success", "context": "ci"})
    assert status == 201
    valid(models.Status, posted)
    status, combined = api("GET", f"/repos/acme/site/commits/{sha}/status")
    assert status == 200 and combined["state"] == "success"
    valid(models.CombinedCommitStatus, combined)
    gh.add_check_run("acme", "site", sha, "build")
    status, runs = api("GET", f"/repos/acme/site/commits/{sha}/check-runs")
    assert status == 200 and runs["total_count"] == 1
    valid(models.ReposOwnerRepoCommitsRefCheckRunsGetResponse200, runs)
    status, merged = api("PUT", "/repos/acme/site/pulls/1/merge", {"sha": sha})
    assert status == 200
    valid(models.PullRequestMergeResult, merged)
    status, after = api("GET", "/repos/acme/site/pulls/1")
    assert after["merged"] is True
    valid(models.PullRequest, after)
    branch(gh, "agent/b-1", "b")
    api("POST", "/repos/acme/site/pulls", {"head": "agent/b-1", "base": "main", "title": "B"})
    status, closed = api("PATCH", "/repos/acme/site/pulls/2", {"state": "closed"})
    assert status == 200 and closed["state"] == "closed"
    valid(models.PullRequest, closed)


def test_no_statuses_is_pending_with_an_empty_list(gh, api, models) -> None:
    sha = branch(gh, "agent/c-1")
    status, combined = api("GET", f"/repos/acme/site/commits/{sha}/status")
    assert (combined["state"], combined["total_count"], combined["statuses"]) == ("pending", 0, [])
    valid(models.CombinedCommitStatus, combined)


def test_error_bodies(gh, api, models) -> None:
    status, missing = api("GET", "/repos/acme/nope")
    assert status == 404
    valid(models.BasicError, missing)
    branch(gh, "agent/d-1")
    status, invalid = api(
        "POST", "/repos/acme/site/pulls", {"head": "agent/d-1", "base": "nope", "title": "D"}
    )
    assert status == 422 and invalid["errors"]
    valid(models.ValidationError, invalid)
    gh.state.repos["acme/site"].drafts_supported = False
    status, draft = api(
        "POST", "/repos/acme/site/pulls", {"head": "agent/d-1", "base": "main", "title": "D", "draft": True}
    )
    assert status == 422 and draft["message"] == "Draft pull requests are not supported in this repository."
    valid(models.BasicError, draft)
    api("POST", "/repos/acme/site/pulls", {"head": "agent/d-1", "base": "main", "title": "D"})
    status, exists = api(
        "POST", "/repos/acme/site/pulls", {"head": "agent/d-1", "base": "main", "title": "D"}
    )
    assert status == 422 and "A pull request already exists" in exists["errors"][0]["message"]
    valid(models.ValidationError, exists)
    status, reviewer = api("POST", "/repos/acme/site/pulls/1/requested_reviewers", {"reviewers": ["mallory"]})
    assert status == 422
    valid(models.BasicError, reviewer)
    status, unmergeable = api("PUT", "/repos/acme/site/pulls/1/merge", {"sha": "0" * 40})
    assert status == 409
    valid(models.BasicError, unmergeable)
    gh.faults.add(secondary_rate_limit("GET", r"/pulls$"))
    status, limited = api("GET", "/repos/acme/site/pulls")
    assert status == 403 and "secondary rate limit" in limited["message"]
    valid(models.BasicError, limited)
    status, denied = Client(gh, "ghp_" + "0" * 36)("GET", "/repos/acme/site")
    assert status == 401
    valid(models.BasicError, denied)


def test_app_endpoints_and_their_errors(gh, models) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    gh.add_app(42, public, {7: {"acme/site"}})
    now = int(time.time())
    app_jwt = jwt.encode({"iat": now - 60, "exp": now + 540, "iss": "42"}, key, algorithm="RS256")
    app = Client(gh, app_jwt)
    status, installation = app("GET", "/repos/acme/site/installation")
    assert status == 200
    valid(models.Installation, installation)
    status, granted = app("POST", "/app/installations/7/access_tokens")
    assert status == 201
    valid(models.InstallationToken, granted)
    bot = Client(gh, granted["token"])
    branch(gh, "agent/e-1")
    bot("POST", "/repos/acme/site/pulls", {"head": "agent/e-1", "base": "main", "title": "E"})
    status, refused = bot(
        "POST", "/repos/acme/site/pulls/1/requested_reviewers", {"team_reviewers": ["docs"]}
    )
    assert status == 403 and refused["message"] == "Resource not accessible by integration"
    valid(models.BasicError, refused)
    status, unknown = app("POST", "/app/installations/99/access_tokens")
    assert status == 404
    valid(models.BasicError, unknown)


# Every REST route of the double, by handler, is exercised above (a new route needs a case here).
COVERED = {
    "rate_limit",
    "get_repo",
    "list_pulls",
    "create_pull",
    "get_pull",
    "update_pull",
    "merge_pull",
    "request_reviewers",
    "list_comments",
    "create_comment",
    "combined_status",
    "create_status",
    "list_check_runs",
}


def test_every_route_of_the_double_is_validated(gh) -> None:
    assert {handler.__name__ for _, _, handler in gh.rest.routes} == COVERED


def test_a_drifted_answer_is_never_sent(gh, api, monkeypatch) -> None:
    # Every answer is checked as it leaves, so a drift fails whichever test meets it.
    branch(gh, "agent/f-1")
    api("POST", "/repos/acme/site/pulls", {"head": "agent/f-1", "base": "main", "title": "F"})
    real = type(gh.urls).pull

    def without_head(self, *args, **kwargs):
        data = real(self, *args, **kwargs)
        del data["head"]
        return data

    monkeypatch.setattr(type(gh.urls), "pull", without_head)
    status, body = api("GET", "/repos/acme/site/pulls/1")
    assert status == 500 and "drifted" in body["message"] and "head" in body["message"]
    assert gh.schema_violations and "get_pull 200 is not a valid PullRequest" in gh.schema_violations[0]
