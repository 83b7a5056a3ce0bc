"""GitHub credentials as GitHub hands them out: data-residency API hosts, an installation token revoked
before it expires (401: exchange once more), and the stateless ~520-character ``ghs_<app>_<jwt>``
installation tokens that the double issues, through REST, git and redaction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from github_double import GithubDouble
from github_double.faults import Fault
from test_github_forge import KEY_ENV, body_for, push_branch, target_for

from leviathan_dagster.core.errors import ConfigError, TransientError
from leviathan_dagster.core.forge.github.errors import RetryPolicy
from leviathan_dagster.core.forge.github.forge import GithubForge
from leviathan_dagster.core.forge.github.location import api_url_for, derive_location
from leviathan_dagster.core.models import GithubSettings, TargetConfig
from leviathan_dagster.core.redaction import redact


@pytest.fixture
def gh(tmp_path: Path):
    with GithubDouble(tmp_path / "github") as double:
        double.add_repo("acme", "site", {"README.md": "# site\n"})
        yield double


@pytest.fixture
def private_key(gh: GithubDouble) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    gh.add_app(4242, public, {7: {"acme/site"}})
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
def app_forge(gh: GithubDouble, private_key: str):
    forge = GithubForge(
        target_for(gh, app_id=4242, installation_id=7),
        {KEY_ENV: private_key},
        retry=RetryPolicy(attempts=2, initial_backoff=0.01, max_backoff=0.01),
        seconds_between_writes=0,
        seconds_between_requests=0,
    )
    yield forge
    forge.close()


def test_data_residency_hosts_use_their_api_subdomain() -> None:
    def target(url: str) -> TargetConfig:
        return TargetConfig(id="t", repo_url=url, forge="github", github=GithubSettings())

    assert derive_location(target("https://octocorp.ghe.com/acme/site.git")) == (
        "https://api.octocorp.ghe.com",
        "acme/site",
    )
    assert api_url_for("https", "OctoCorp.GHE.com") == "https://api.octocorp.ghe.com"
    assert api_url_for("https", "github.com") == "https://api.github.com"
    assert api_url_for("https", "ghe.example.com") == "https://ghe.example.com/api/v3"
    assert api_url_for("https", "notghe.com.example.org") == "https://notghe.com.example.org/api/v3"


def test_a_revoked_installation_token_is_dropped_and_exchanged_once_more(gh, app_forge, private_key) -> None:
    assert app_forge.list_pull_requests() == []
    [first] = gh.state.issued_installation_tokens
    gh.revoke_token(first)  # still an hour before it expires
    assert app_forge.list_pull_requests() == []
    assert len(gh.state.issued_installation_tokens) == 2
    second = gh.state.issued_installation_tokens[1]
    assert app_forge.git_auth_env() != {} and app_forge._source.token() == second
    # The next forge of this process does not pick up the revoked token from the shared cache.
    other = GithubForge(
        target_for(gh, app_id=4242, installation_id=7),
        {KEY_ENV: private_key},
        seconds_between_requests=0,
    )
    assert other._source.token() == second
    other.close()


def test_a_second_401_is_the_answer(gh, app_forge) -> None:
    app_forge.list_pull_requests()
    gh.faults.add(Fault("GET", re.compile(r"/pulls$"), 5, status=401, message="Bad credentials"))
    with pytest.raises(ConfigError, match="401 Bad credentials"):
        app_forge.list_pull_requests()
    assert len(gh.state.issued_installation_tokens) == 2  # one more exchange, not a loop
    assert gh.count("GET", "/repos/acme/site/pulls") == 3


def test_stateless_installation_tokens_work_for_rest_and_git_and_never_leak(gh, app_forge, tmp_path) -> None:
    push_branch(app_forge, tmp_path / "w", "agent/a-1")
    pr = app_forge.open_pull_request(head="agent/a-1", base="main", title="A", body=body_for("a"))
    assert pr.number == 1
    [token] = gh.state.issued_installation_tokens
    assert token.startswith("ghs_4242_") and token.count(".") == 2 and len(token) > 500
    assert token not in (tmp_path / "w" / ".git" / "config").read_text()
    # A proxy that echoes the request's Authorization header into its error page.
    echo = f"upstream failed for Authorization: token {token}"
    gh.faults.add(Fault("GET", re.compile(r"/pulls$"), 5, status=502, message=echo))
    with pytest.raises(TransientError) as raised:
        app_forge.list_pull_requests()
    for part in re.split(r"[._]", token.removeprefix("ghs_4242_")):
        assert part not in str(raised.value)


def test_a_stateless_token_nobody_told_redact_about_is_still_hidden(gh, app_forge) -> None:
    app_forge.list_pull_requests()
    [token] = gh.state.issued_installation_tokens
    out = redact(f"fatal: could not read from 'https://x-access-token:{token}' (echo: {token})")
    for part in re.split(r"[._]", token.removeprefix("ghs_4242_")):
        assert part not in out


def test_a_push_refused_for_a_revoked_installation_token_renews_it_once(gh, app_forge, tmp_path) -> None:
    from leviathan_dagster.core.git import commands as gitutil
    from worker.attempt import _push

    work = tmp_path / "w"
    gitutil.clone(app_forge.clone_url(), work, "main", env=app_forge.git_auth_env())
    gitutil.run_git(["checkout", "-q", "-b", "agent/a-1"], cwd=work)
    (work / "docs").mkdir()
    (work / "docs" / "a.md").write_text("a\n", encoding="utf-8")
    gitutil.commit_all(work, "a")
    commit = gitutil.run_git(["rev-parse", "HEAD"], cwd=work).strip()
    gh.revoke_token(gh.state.issued_installation_tokens[0])
    _push(work, app_forge.clone_url(), "agent/a-1", commit, app_forge)
    assert gh.state.branch_sha(gh.state.repos["acme/site"], "agent/a-1") is not None
    assert len(gh.state.issued_installation_tokens) == 2
