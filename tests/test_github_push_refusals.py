"""Push refusals GitHub means for good are told apart from transient ones, with GitHub's own words.

Each refusal comes from the GitHub double's real ``pre-receive`` checks over ``git http-backend``
(workflow files without the permission, GH009 push protection, GH013 rulesets, GH006 branch
protection, a read-only credential), exactly as git prints GitHub's answer. The worker fails such an
attempt as ``push_rejected``, which counts against the task (failures.TABLE); a 5xx stays
``infrastructure``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from github_double import GithubDouble, server_error
from test_github_forge import KEY_ENV, TOKEN_ENV, make_forge, target_for

from leviathan_dagster.core.forge.github.errors import permanent_push_refusal
from leviathan_dagster.core.forge.github.forge import GithubForge
from leviathan_dagster.core.git import commands as gitutil


@pytest.fixture
def gh(tmp_path: Path):
    with GithubDouble(tmp_path / "github") as double:
        double.add_repo("acme", "site", {"README.md": "# site\n"})
        yield double


def refused_push(forge: GithubForge, work: Path, branch: str, files: dict[str, str]) -> str:
    """git's output for a push of ``files`` on ``branch`` that must fail."""
    if not work.exists():
        gitutil.clone(forge.clone_url(), work, "main", env=forge.git_auth_env())
    gitutil.run_git(["checkout", "-q", "-B", branch, "origin/main"], cwd=work)
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text, encoding="utf-8")
    gitutil.commit_all(work, f"change on {branch}")
    with pytest.raises(gitutil.GitError) as raised:
        gitutil.push(work, "origin", f"HEAD:refs/heads/{branch}", env=forge.git_auth_env())
    return raised.value.stderr


def token_forge(gh: GithubDouble, **permissions) -> GithubForge:
    token = "ghp_" + secrets.token_hex(18)
    gh.add_token(token, permissions=permissions or None)
    return make_forge(gh, {TOKEN_ENV: token})


def test_app_without_workflows_permission_is_refused_for_good(gh, tmp_path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    gh.add_app(42, public, {7: {"acme/site"}})
    forge = GithubForge(
        target_for(gh, app_id=42, installation_id=7), {KEY_ENV: private}, seconds_between_requests=0
    )
    output = refused_push(forge, tmp_path / "w", "agent/ci", {".github/workflows/ci.yml": "on: push\n"})
    expected = (
        "refusing to allow a GitHub App to create or update workflow `.github/workflows/ci.yml` "
        "without `workflows` permission"
    )
    assert f"! [remote rejected] HEAD -> agent/ci ({expected})" in output
    refusal = forge.permanent_push_refusal(output)
    assert refusal and expected in refusal and "`workflows` permission" in refusal
    forge.close()


def test_token_without_workflow_scope_is_refused_for_good(gh, tmp_path) -> None:
    forge = token_forge(gh)
    output = refused_push(forge, tmp_path / "w", "agent/ci", {".github/workflows/ci.yml": "on: push\n"})
    refusal = forge.permanent_push_refusal(output)
    assert refusal and "without `workflow` scope" in refusal


def test_secret_push_protection_gh009(gh, tmp_path) -> None:
    forge = token_forge(gh)
    leaked = "ghp_" + "A1b2" * 9
    output = refused_push(forge, tmp_path / "w", "agent/s", {"docs/s.md": f"token: {leaked}\n"})
    assert "remote: error: GH009: Secrets detected! This push failed." in output
    refusal = forge.permanent_push_refusal(output)
    assert refusal and "GH009" in refusal and "Push cannot contain secrets" in refusal


def test_ruleset_gh013(gh, tmp_path) -> None:
    forge = token_forge(gh)
    gh.restrict_ref_creation("acme", "site", "refs/heads/agent/*")
    output = refused_push(forge, tmp_path / "w", "agent/r", {"docs/r.md": "r\n"})
    assert "(push declined due to repository rule violations)" in output
    refusal = forge.permanent_push_refusal(output)
    assert refusal and "GH013: Repository rule violations found for refs/heads/agent/r" in refusal
    assert "Cannot create ref due to creations being restricted" in refusal


def test_protected_branch_gh006(gh, tmp_path) -> None:
    forge = token_forge(gh)
    gh.reject_next_push("GH006: Protected branch update failed for refs/heads/agent/p.")
    output = refused_push(forge, tmp_path / "w", "agent/p", {"docs/p.md": "p\n"})
    refusal = forge.permanent_push_refusal(output)
    assert refusal and "(protected branch hook declined)" in refusal


def test_read_only_token_403(gh, tmp_path) -> None:
    writer = token_forge(gh)
    gitutil.clone(writer.clone_url(), tmp_path / "w", "main", env=writer.git_auth_env())
    reader = token_forge(gh, contents="read", metadata="read")
    output = refused_push(reader, tmp_path / "w", "agent/ro", {"docs/ro.md": "ro\n"})
    assert "The requested URL returned error: 403" in output
    refusal = reader.permanent_push_refusal(output)
    assert refusal and "Permission to acme/site.git denied to leviathan-bot." in refusal


def test_server_errors_and_unknown_refusals_stay_transient(gh, tmp_path) -> None:
    forge = token_forge(gh)
    gh.faults.add(server_error("POST", r"/git-receive-pack$", status=500))
    output = refused_push(forge, tmp_path / "w", "agent/t", {"docs/t.md": "t\n"})
    assert "500" in output and forge.permanent_push_refusal(output) is None
    assert permanent_push_refusal("fatal: unable to access 'x': Could not resolve host: github.com") is None


def test_saml_sso_enforcement_is_permanent() -> None:
    output = (
        "remote: The 'acme' organization has enabled or enforced SAML SSO. To access this repository, "
        "you must use the HTTPS remote with a personal access token or SSH with an SSH key and passphrase "
        "that has been authorized for this organization.\n"
        "fatal: unable to access 'https://github.com/acme/site.git/': The requested URL returned error: 403\n"
    )
    refusal = permanent_push_refusal(output)
    assert refusal and "SAML single sign-on" in refusal and "returned error: 403" in refusal
