"""GithubForge through the real PyGithub (and real git) against the wire-level GitHub double."""

from __future__ import annotations

import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import MappingProxyType

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from github_double import GithubDouble, secondary_rate_limit, server_error, slow
from github_double.state import Pull

from leviathan_dagster.core.attempts.markers import render_task_marker
from leviathan_dagster.core.errors import ConfigError, ConflictError, NotFoundError, TransientError
from leviathan_dagster.core.forge.github.errors import GithubTransientError, RetryPolicy
from leviathan_dagster.core.forge.github.forge import GithubForge, derive_location
from leviathan_dagster.core.git import commands as gitutil
from leviathan_dagster.core.models import GithubSettings, TargetConfig
from leviathan_dagster.core.redaction import redact

TOKEN_ENV = "LEVIATHAN_TEST_GITHUB_TOKEN"
KEY_ENV = "LEVIATHAN_TEST_GITHUB_APP_KEY"


class Sleeps(list):
    """Records every wait the retry policy asks for, and really waits (the double runs on real time)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        time.sleep(seconds)


@pytest.fixture
def gh(tmp_path: Path):
    with GithubDouble(tmp_path / "github") as double:
        double.add_repo("acme", "site", {"README.md": "# site\n"}, collaborators={"alice"}, teams={"docs"})
        yield double


@pytest.fixture
def token(gh: GithubDouble) -> str:
    value = "ghp_" + secrets.token_hex(18)
    gh.add_token(value)
    return value


def target_for(gh: GithubDouble, **github) -> TargetConfig:
    return TargetConfig(
        id="site",
        repo_url=gh.repo_url("acme", "site"),
        forge="github",
        secret_env=MappingProxyType({"github_token": TOKEN_ENV, "github_app_private_key": KEY_ENV}),
        github=GithubSettings(api_url=gh.api_url, **github),
    )


def make_forge(gh: GithubDouble, environ: dict, sleeps: Sleeps | None = None, **github) -> GithubForge:
    policy = RetryPolicy(
        attempts=4,
        initial_backoff=0.05,
        max_backoff=0.2,
        max_wait=30,
        sleep=sleeps if sleeps is not None else Sleeps(),
    )
    return GithubForge(
        target_for(gh, **github), environ, retry=policy, seconds_between_writes=0, seconds_between_requests=0
    )


def push_branch(forge: GithubForge, work: Path, branch: str, name: str = "docs/a.md") -> None:
    if not work.exists():
        gitutil.clone(forge.clone_url(), work, "main", env=forge.git_auth_env())
    gitutil.run_git(["checkout", "-q", "-B", branch, "origin/main"], cwd=work)
    (work / name).parent.mkdir(parents=True, exist_ok=True)
    (work / name).write_text(f"{branch}\n", encoding="utf-8")
    gitutil.commit_all(work, f"change on {branch}")
    gitutil.push(work, "origin", f"HEAD:refs/heads/{branch}", env=forge.git_auth_env())


def body_for(task: str) -> str:
    return f"Work on {task}\n\n{render_task_marker('site', task)}\n"


# -- token auth, clone/push, PRs -----------------------------------------------------------------------


def test_token_clone_push_open_pr_with_body_and_reviewers(gh, token, tmp_path) -> None:
    forge = make_forge(gh, {TOKEN_ENV: token})
    push_branch(forge, tmp_path / "work", "agent/a-attempt-1")
    pr = forge.open_pull_request(
        head="agent/a-attempt-1",
        base="main",
        title="[leviathan] A",
        body=body_for("a"),
        reviewers=["alice", "acme/docs"],
    )
    assert (pr.number, pr.state, pr.head, pr.base, pr.draft) == (
        1,
        "open",
        "agent/a-attempt-1",
        "main",
        False,
    )
    assert pr.task_marker() == "site/a" and pr.url.endswith("/acme/site/pull/1")
    assert set(pr.reviewers) == {"alice", "acme/docs"}  # teams as requested: org/slug
    [stored] = gh.pulls("acme", "site")
    assert stored.body == body_for("a") and stored.requested_reviewers == ["alice"]
    config = (tmp_path / "work" / ".git" / "config").read_text()
    assert token not in config and gh.repo_url("acme", "site") in config


def test_git_without_credentials_is_refused(gh, token, tmp_path) -> None:
    with pytest.raises(TransientError) as raised:
        gitutil.clone(gh.repo_url("acme", "site"), tmp_path / "anon", "main")
    assert "terminal prompts disabled" in str(raised.value)


def test_unknown_reviewer_leaves_the_pr_open_and_explains_in_a_comment(gh, token, tmp_path) -> None:
    forge = make_forge(gh, {TOKEN_ENV: token})
    push_branch(forge, tmp_path / "work", "agent/a-attempt-1")
    pr = forge.open_pull_request(
        head="agent/a-attempt-1", base="main", title="A", body=body_for("a"), reviewers=["mallory"]
    )
    assert pr.state == "open" and pr.reviewers == ()
    [comment] = gh.state.repos["acme/site"].comments[pr.number]
    assert "mallory" in comment["body"] and "collaborator" in comment["body"]


def test_list_count_merge_close_and_agent_prefix(gh, token, tmp_path) -> None:
    forge = make_forge(gh, {TOKEN_ENV: token})
    work = tmp_path / "work"
    for i, branch in enumerate(("agent/a-1", "agent/b-1", "feature/human")):
        push_branch(forge, work, branch, name=f"docs/{i}.md")
        forge.open_pull_request(head=branch, base="main", title=branch, body=body_for(f"t{i}"))
    assert [pr.number for pr in forge.open_agent_pull_requests()] == [1, 2]
    merged = forge.merge_pull_request(1)
    assert merged.state == "merged" and merged.merged_at and len(merged.merge_commit_sha or "") == 40
    assert gh.state.branch_sha(gh.state.repos["acme/site"], "main") == merged.merge_commit_sha
    closed = forge.close_pull_request(2)
    assert closed.state == "closed" and closed.closed_at and closed.merged_at is None
    assert [pr.number for pr in forge.list_pull_requests("open")] == [3]
    assert [pr.number for pr in forge.list_pull_requests("merged")] == [1]
    assert [pr.number for pr in forge.list_pull_requests("closed")] == [2]
    assert [pr.number for pr in forge.list_pull_requests("all")] == [1, 2, 3]
    assert forge.open_agent_pull_requests() == []
    with pytest.raises(ConflictError):
        forge.close_pull_request(1)
    with pytest.raises(NotFoundError):
        forge.get_pull_request(99)


def test_pagination_is_followed(gh, token, tmp_path) -> None:
    forge = make_forge(gh, {TOKEN_ENV: token})
    push_branch(forge, tmp_path / "work", "agent/x")
    forge.open_pull_request(head="agent/x", base="main", title="x", body=body_for("x"))
    repo = gh.state.repos["acme/site"]
    # Earlier closed PRs (no branches needed): more than one page of 100.
    for n in range(2, 131):
        repo.pulls[n] = Pull(n, n, "old", "", "agent/old", "main", False, "bot", 0, 0, state="closed")
    assert [pr.number for pr in forge.list_pull_requests("all")] == list(range(1, 131))
    assert gh.count("GET", "/repos/acme/site/pulls") >= 3  # the open check, then two pages


# -- faults ------------------------------------------------------------------------------------------


def test_502_after_github_created_the_pr_is_retried_into_exactly_one_pr(gh, token, tmp_path) -> None:
    forge = make_forge(gh, {TOKEN_ENV: token})
    push_branch(forge, tmp_path / "work", "agent/a-attempt-1")
    gh.faults.add(server_error("POST", r"/repos/acme/site/pulls$", after=True))
    pr = forge.open_pull_request(head="agent/a-attempt-1", base="main", title="A", body=body_for("a"))
    assert pr.number == 1
    assert len(gh.pulls("acme", "site")) == 1
    assert gh.count("POST", "/repos/acme/site/pulls") == 1  # the retry found the PR instead of re-posting


def test_502s_before_creation_are_retried_with_backoff(gh, token, tmp_path) -> None:
    sleeps = Sleeps()
    forge = make_forge(gh, {TOKEN_ENV: token}, sleeps)
    push_branch(forge, tmp_path / "work", "agent/a-attempt-1")
    gh.faults.add(server_error("POST", r"/repos/acme/site/pulls$", times=2))
    pr = forge.open_pull_request(head="agent/a-attempt-1", base="main", title="A", body=body_for("a"))
    assert pr.number == 1 and len(gh.pulls("acme", "site")) == 1
    assert gh.count("POST", "/repos/acme/site/pulls") == 3 and len(sleeps) == 2


def test_persistent_5xx_ends_as_transient_error(gh, token) -> None:
    forge = make_forge(gh, {TOKEN_ENV: token})
    gh.faults.add(server_error("GET", r"/pulls$", status=503, times=10))
    with pytest.raises(TransientError, match="503"):
        forge.list_pull_requests()
    assert gh.count("GET", "/repos/acme/site/pulls") == 4  # RetryPolicy.attempts


# Waits for rate limits on a fake clock (never slept for real): test_github_rate_limits.py.


def test_rate_limit_beyond_max_wait_is_not_slept_through(gh, token) -> None:
    sleeps = Sleeps()
    forge = make_forge(gh, {TOKEN_ENV: token}, sleeps)
    gh.faults.add(secondary_rate_limit("GET", r"/pulls$", retry_after=3600))
    with pytest.raises(GithubTransientError) as raised:
        forge.list_pull_requests()
    assert raised.value.retry_after == 3600 and sleeps == []


def test_slow_response_times_out_and_is_retried(gh, token) -> None:
    forge = make_forge(gh, {TOKEN_ENV: token}, timeout_seconds=1)
    gh.faults.add(slow("GET", r"/pulls$", seconds=2.5))
    assert forge.list_pull_requests() == []
    assert gh.count("GET", "/repos/acme/site/pulls") >= 1


def test_push_rejected_is_transient_and_names_no_token(gh, token, tmp_path) -> None:
    forge = make_forge(gh, {TOKEN_ENV: token})
    push_branch(forge, tmp_path / "work", "agent/a")
    gh.reject_next_push("GH006: Protected branch update failed for refs/heads/agent/b.")
    with pytest.raises(TransientError) as raised:
        push_branch(forge, tmp_path / "work", "agent/b", name="docs/b.md")
    assert "GH006" in str(raised.value) and token not in str(raised.value)


def test_bad_token_is_a_config_error_without_the_token(gh, token) -> None:
    wrong = "ghp_" + "0" * 36
    forge = make_forge(gh, {TOKEN_ENV: wrong})
    with pytest.raises(ConfigError, match="401") as raised:
        forge.list_pull_requests()
    assert wrong not in str(raised.value) and "github_token" in str(raised.value)


def test_missing_secret_is_a_config_error_naming_the_fix(gh) -> None:
    with pytest.raises(ConfigError, match=f"environment variable {TOKEN_ENV} is empty"):
        make_forge(gh, {})


# -- GitHub App ----------------------------------------------------------------------------------------


@pytest.fixture
def app_key() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def test_app_auth_installation_token_for_rest_and_git_refreshed_before_expiry(gh, app_key, tmp_path) -> None:
    private, public = app_key
    gh.add_app(42, public, {7: {"acme/site"}}, ttl=3600)
    frozen: list[float] = []  # empty: real time; else the clock reads this
    policy = RetryPolicy(attempts=2, initial_backoff=0.01, max_backoff=0.01)
    forge = GithubForge(
        target_for(gh, app_id=42),  # no installation_id: looked up for the repository
        {KEY_ENV: private},
        retry=policy,
        seconds_between_writes=0,
        seconds_between_requests=0,
        clock=lambda: frozen[0] if frozen else time.time(),
    )
    push_branch(forge, tmp_path / "work", "agent/a")
    pr = forge.open_pull_request(head="agent/a", base="main", title="A", body=body_for("a"))
    assert gh.pulls("acme", "site")[0].user == "app-42[bot]" and pr.number == 1
    assert len(gh.state.issued_installation_tokens) == 1
    assert gh.count("GET", "/repos/acme/site/installation") == 1
    expires = forge._source._expires_at
    frozen.append(expires - 301)  # just outside the 300 s refresh margin: the token is still used
    forge.list_pull_requests()
    assert len(gh.state.issued_installation_tokens) == 1
    frozen[0] = expires - 299  # inside the margin: replaced before it expires
    assert forge.list_pull_requests()[0].number == 1
    assert len(gh.state.issued_installation_tokens) == 2
    git_env = forge.git_auth_env()
    assert gh.state.issued_installation_tokens[-1] not in str(git_env)  # base64 inside a header only
    config = (tmp_path / "work" / ".git" / "config").read_text()
    assert all(t not in config for t in gh.state.issued_installation_tokens)


def test_installation_token_is_reused_by_the_next_forge_of_the_process(gh, app_key) -> None:
    # Each sensor tick and attempt builds its own forge; they share the App's token until it is due.
    private, public = app_key
    gh.add_app(42, public, {7: {"acme/site"}}, ttl=3600)

    def forge() -> GithubForge:
        target = target_for(gh, app_id=42)
        return GithubForge(target, {KEY_ENV: private}, seconds_between_requests=0)

    first, second = forge(), forge()
    first.list_pull_requests()
    second.list_pull_requests()
    assert len(gh.state.issued_installation_tokens) == 1
    assert gh.count("GET", "/repos/acme/site/installation") == 1
    assert (first._source.refreshes, second._source.refreshes) == (1, 0)
    # Another key for the same App (rotated) never reuses that token.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    gh.add_app(
        42,
        other.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        {7: {"acme/site"}},
        ttl=3600,
    )
    rotated = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    third = GithubForge(target_for(gh, app_id=42), {KEY_ENV: rotated}, seconds_between_requests=0)
    third.list_pull_requests()
    assert len(gh.state.issued_installation_tokens) == 2
    for forge_ in (first, second, third):
        forge_.close()


def test_app_jwt_signed_with_another_key_is_refused(gh, app_key) -> None:
    _, public = app_key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    gh.add_app(42, public, {7: {"acme/site"}})
    forge = GithubForge(
        target_for(gh, app_id=42, installation_id=7),
        {KEY_ENV: other.decode()},
        retry=RetryPolicy(attempts=1),
        seconds_between_requests=0,
    )
    with pytest.raises(ConfigError, match="401") as raised:
        forge.list_pull_requests()
    assert "PRIVATE KEY" not in str(raised.value)
    assert gh.state.issued_installation_tokens == []


def test_app_without_private_key_is_a_config_error(gh) -> None:
    with pytest.raises(ConfigError, match="private key"):
        GithubForge(target_for(gh, app_id=42), {})


# -- configuration and redaction --------------------------------------------------------------------


def test_location_is_derived_from_repo_url() -> None:
    def target(url: str, **github) -> TargetConfig:
        return TargetConfig(id="t", repo_url=url, forge="github", github=GithubSettings(**github))

    assert derive_location(target("https://github.com/acme/site.git")) == (
        "https://api.github.com",
        "acme/site",
    )
    assert derive_location(target("https://ghe.example.com/acme/site")) == (
        "https://ghe.example.com/api/v3",
        "acme/site",
    )
    assert derive_location(target("https://x/y", repository="a/b", api_url="https://x/api")) == (
        "https://x/api",
        "a/b",
    )
    with pytest.raises(ConfigError, match="must not carry credentials") as raised:
        derive_location(target("https://x-access-token:ghp_secretsecretsecret1234@github.com/a/b.git"))
    assert "ghp_secret" not in str(raised.value)
    with pytest.raises(ConfigError, match="https repo_url"):
        derive_location(target("/srv/repos/site.git"))


def test_redact_removes_tokens_headers_userinfo_and_known_secrets() -> None:
    text = (
        "fatal: unable to access 'https://x-access-token:s3cr3t-value@github.com/a/b.git/': "
        "Authorization: Basic eC1hY2Nlc3MtdG9rZW46Z2hwX3h4eA== ghs_"
        + "a" * 36
        + " github_pat_"
        + "b" * 40
        + " Bearer eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOjQyfQ.c2lnbmF0dXJlLXZhbHVl plain-known-secret"
    )
    out = redact(text, ["plain-known-secret"])
    for leaked in ("s3cr3t-value", "eC1hY2Nl", "ghs_", "github_pat_", "eyJhbGci", "plain-known-secret"):
        assert leaked not in out
    assert redact("token totals: 120") == "token totals: 120"


def test_git_error_messages_are_redacted(tmp_path) -> None:
    secret_url = "https://x-access-token:ghp_" + "z" * 36 + "@127.0.0.1:9/acme/site.git"
    with pytest.raises(TransientError) as raised:
        gitutil.clone(secret_url, tmp_path / "x", "main")
    assert "ghp_" not in str(raised.value) and "zzzz" not in str(raised.value)


def test_github_section_is_parsed_and_checked(tmp_path) -> None:
    from leviathan_dagster.core.config.project import parse_project_config

    text = (
        "targets:\n"
        "  - id: svc\n"
        "    repo_url: https://github.com/acme/svc.git\n"
        "    forge: github\n"
        "    github: {app_id: 12, installation_id: 34, draft_until_green: true, repository: acme/svc}\n"
        "    secrets: {github_app_private_key: {env: GITHUB_APP_PRIVATE_KEY}}\n"
    )
    [svc] = parse_project_config(text, "leviathan.yaml", base_dir=tmp_path).targets
    assert svc.github == GithubSettings(
        app_id=12, installation_id=34, draft_until_green=True, repository="acme/svc"
    )
    bad = text.replace("app_id: 12", "app_id: twelve").replace("repository: acme/svc", "repository: svc")
    with pytest.raises(ConfigError) as raised:
        parse_project_config(bad, "leviathan.yaml", base_dir=tmp_path)
    message = str(raised.value)
    assert "leviathan.yaml:5: target 'svc': github.app_id must be an integer from 1 to" in message
    assert "github.repository must be 'owner/name'" in message


def test_double_rejects_expired_installation_tokens(gh, app_key) -> None:
    private, public = app_key
    gh.add_app(42, public, {7: {"acme/site"}}, ttl=1)
    forge = GithubForge(
        target_for(gh, app_id=42, installation_id=7), {KEY_ENV: private}, seconds_between_requests=0
    )
    token = forge._source.token()
    request = urllib.request.Request(
        gh.api_url + "/repos/acme/site", headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200
    time.sleep(1.1)
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request)
    assert raised.value.code == 401
    raised.value.close()
    forge.close()
