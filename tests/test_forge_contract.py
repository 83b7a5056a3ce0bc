"""The forge contract (forge_contract.py) run against every backend: the local forge on a bare
repository, and the GitHub forge through PyGithub and git against the wire-level GitHub double,
authenticated by a token and by a GitHub App."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from forge_contract import INITIAL_FILES, REVIEWER_TEAM, REVIEWER_USER, TARGET_ID, ForgeBackend, ForgeContract
from github_double import GithubDouble, server_error
from test_github_forge import KEY_ENV, TOKEN_ENV, target_for

from leviathan_dagster.core.forge.github.errors import RetryPolicy
from leviathan_dagster.core.forge.github.forge import GithubForge
from leviathan_dagster.core.forge.local import LocalForge
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import TargetConfig
from leviathan_dagster.demo_setup import make_repository


class LocalBackend(ForgeBackend):
    def __init__(self, tmp_path: Path) -> None:
        self.repository = tmp_path / "site.git"
        make_repository(self.repository, INITIAL_FILES)
        self.home = LeviathanHome(tmp_path / "home")
        self.target = TargetConfig(id=TARGET_ID, repo_url=str(self.repository))
        self.environ = {}
        self.forge = LocalForge(TARGET_ID, str(self.repository), self.home.root)
        self.reads = 0
        read = self.forge._read

        def counted(path: Path):
            self.reads += 1
            return read(path)

        self.forge._read = counted  # records read: what listing costs on disk

    def listing_cost(self) -> int:
        return self.reads

    def break_service(self) -> None:
        shutil.rmtree(self.repository)


class TestLocalForgeContract(ForgeContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[ForgeBackend]:
        yield LocalBackend(tmp_path)


class GithubBackend(ForgeBackend):
    def __init__(self, gh: GithubDouble, tmp_path: Path, environ: dict[str, str], **github) -> None:
        self.gh = gh
        self.home = LeviathanHome(tmp_path / "home")
        self.target = target_for(gh, **github)
        self.environ = environ
        policy = RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.05)
        self.forge = GithubForge(
            self.target, environ, retry=policy, seconds_between_writes=0, seconds_between_requests=0
        )

    def listing_cost(self) -> int:
        return self.gh.count("GET", "/repos/acme/site/pulls")  # requests, each at most a page

    def break_service(self) -> None:
        self.gh.faults.add(server_error("*", r".*", status=503, times=10_000))


@pytest.fixture
def gh(tmp_path: Path) -> Iterator[GithubDouble]:
    with GithubDouble(tmp_path / "github") as double:
        team = REVIEWER_TEAM.split("/", 1)[1]
        double.add_repo("acme", "site", INITIAL_FILES, collaborators={REVIEWER_USER}, teams={team})
        yield double


class TestGithubTokenForgeContract(ForgeContract):
    @pytest.fixture
    def backend(self, gh: GithubDouble, tmp_path: Path) -> Iterator[ForgeBackend]:
        token = "ghp_" + secrets.token_hex(18)
        gh.add_token(token)
        backend = GithubBackend(gh, tmp_path, {TOKEN_ENV: token})
        yield backend
        backend.forge.close()


class TestGithubAppForgeContract(ForgeContract):
    @pytest.fixture
    def backend(self, gh: GithubDouble, tmp_path: Path) -> Iterator[ForgeBackend]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        # Organization members (read): what an App needs to request a team's review.
        permissions = {"contents": "write", "pull_requests": "write", "metadata": "read", "members": "read"}
        gh.add_app(42, public, {7: {"acme/site"}}, permissions=permissions)
        backend = GithubBackend(gh, tmp_path, {KEY_ENV: private}, app_id=42)
        yield backend
        backend.forge.close()
