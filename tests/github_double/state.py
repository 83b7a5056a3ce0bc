"""What the GitHub double remembers: repositories (bare git repos on disk), pull requests, comments,
commit statuses, credentials (personal tokens, Apps, installation tokens) and rate-limit counters.

JSON is rendered in GitHub's REST shapes by render.py.
"""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import jwt

RATE_LIMIT = 5000
RATE_WINDOW_SECONDS = 3600
# GitHub's secondary limit on content-creating requests: at most 80 a minute per identity.
CONTENT_WRITES_PER_MINUTE = 80


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Pull:
    number: int
    id: int
    title: str
    body: str
    head: str
    base: str
    draft: bool
    user: str
    created_at: float
    updated_at: float
    state: str = "open"
    merged: bool = False
    merged_at: float | None = None
    closed_at: float | None = None
    merge_commit_sha: str | None = None
    requested_reviewers: list[str] = field(default_factory=list)
    requested_teams: list[str] = field(default_factory=list)
    merged_by: str | None = None


@dataclass
class Repo:
    owner: str
    name: str
    id: int
    path: Path
    default_branch: str = "main"
    collaborators: set[str] = field(default_factory=set)
    teams: set[str] = field(default_factory=set)
    pulls: dict[int, Pull] = field(default_factory=dict)
    comments: dict[int, list[dict]] = field(default_factory=dict)
    statuses: dict[str, list[dict]] = field(default_factory=dict)
    # Push rulesets ({"rule": "creation", "ref": "refs/heads/agent/*"}) and secret push protection.
    rulesets: list[dict] = field(default_factory=list)
    push_protection: bool = True
    # False: a private repository on GitHub Free/Pro, where a draft PR is a 422.
    drafts_supported: bool = True
    check_runs: dict[str, list[dict]] = field(default_factory=dict)  # head sha -> check runs, oldest first

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


# What a fine-grained token or an App installation gets unless a test says otherwise: what the README
# asks for (Contents and Pull requests read/write), and nothing more: no `workflows`, no `members`.
DEFAULT_PERMISSIONS = {"contents": "write", "pull_requests": "write", "metadata": "read"}


@dataclass
class App:
    app_id: int
    public_key_pem: bytes
    installations: dict[int, set[str]]  # installation id -> repository full names
    token_ttl_seconds: int = 3600
    permissions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PERMISSIONS))


@dataclass
class Identity:
    """Who a credential is: a user/bot (token) with repository access, or an App (JWT)."""

    login: str
    kind: str  # "token" | "installation" | "app"
    repos: set[str] | None = None  # None: every repository
    app_id: int | None = None
    expires_at: float | None = None
    permissions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PERMISSIONS))

    def can_access(self, full_name: str) -> bool:
        return self.repos is None or full_name in self.repos

    def can_write(self, permission: str) -> bool:
        return self.permissions.get(permission) == "write"


def stateless_installation_token(app: App, installation_id: int, now: float, expires: float) -> str:
    """GitHub's installation token format since 2026: ``ghs_<APPID>_<JWT>``, about 520 characters with
    two dots, signed by GitHub itself (clients must treat it as opaque; redaction must hide all of it)."""
    claims = {
        "iss": "https://token.actions.githubusercontent.com/s2s",
        "aud": "api.github.com",
        "sub": f"installation:{installation_id}",
        "app_id": app.app_id,
        "installation_id": installation_id,
        "permissions": app.permissions,
        "repository_selection": "selected",
        "iat": int(now),
        "nbf": int(now) - 5,
        "exp": int(expires),
        "jti": secrets.token_urlsafe(24),
    }
    body = jwt.encode(
        claims, secrets.token_bytes(32), algorithm="HS256", headers={"kid": secrets.token_hex(8)}
    )
    return f"ghs_{app.app_id}_{body}"


class State:
    def __init__(self, root: Path, clock: Callable[[], float] = time.time) -> None:
        # The double's "now" (rate-limit windows, token expiry, timestamps): a test that must not sleep
        # gives the double and the client one fake clock that its sleeper advances.
        self.clock = clock
        self.root = root
        self.git_root = root / "git"
        self.git_root.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.repos: dict[str, Repo] = {}
        self.tokens: dict[str, Identity] = {}
        self.apps: dict[int, App] = {}
        self.issued_installation_tokens: list[str] = []
        self.usage: dict[str, tuple[int, float]] = {}  # login -> (used, window reset epoch)
        self.writes: dict[str, list[float]] = {}  # login -> times of its content-creating requests
        self._next_id = 1000

    def new_id(self) -> int:
        with self.lock:
            self._next_id += 1
            return self._next_id

    # -- credentials ---------------------------------------------------------------------------
    def issue_installation_token(self, app: App, installation_id: int) -> tuple[str, float]:
        expires = self.clock() + app.token_ttl_seconds
        token = stateless_installation_token(app, installation_id, self.clock(), expires)
        with self.lock:
            self.tokens[token] = Identity(
                login=f"app-{app.app_id}[bot]",
                kind="installation",
                repos=set(app.installations[installation_id]),
                app_id=app.app_id,
                expires_at=expires,
                permissions=dict(app.permissions),
            )
            self.issued_installation_tokens.append(token)
        return token, expires

    def identity_for_token(self, token: str) -> Identity | None:
        identity = self.tokens.get(token)
        if identity is None or (identity.expires_at is not None and identity.expires_at <= self.clock()):
            return None
        return identity

    def count_request(self, login: str) -> tuple[int, int, int]:
        """Count one REST request; (limit, remaining, reset epoch) after it."""
        with self.lock:
            used, reset = self.usage.get(login, (0, self.clock() + RATE_WINDOW_SECONDS))
            if reset <= self.clock():
                used, reset = 0, self.clock() + RATE_WINDOW_SECONDS
            used += 1
            self.usage[login] = (used, reset)
        return RATE_LIMIT, max(0, RATE_LIMIT - used), int(reset)

    def count_write(self, login: str) -> bool:
        """Count one content-creating request; False when it exceeds GitHub's per-minute limit."""
        with self.lock:
            now = self.clock()
            recent = [t for t in self.writes.get(login, []) if t > now - 60] + [now]
            self.writes[login] = recent
        return len(recent) <= CONTENT_WRITES_PER_MINUTE

    # -- git -------------------------------------------------------------------------------------
    def git(self, repo: Repo, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {
            "GIT_AUTHOR_NAME": "GitHub",
            "GIT_AUTHOR_EMAIL": "noreply@github.example",
            "GIT_COMMITTER_NAME": "GitHub",
            "GIT_COMMITTER_EMAIL": "noreply@github.example",
            "PATH": "/usr/bin:/bin:/usr/local/bin",
        }
        return subprocess.run(
            ["git", *args], cwd=repo.path, env=env, capture_output=True, text=True, check=check
        )

    def branch_sha(self, repo: Repo, branch: str) -> str | None:
        proc = self.git(
            repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}", check=False
        )
        return proc.stdout.strip() or None

    def merge(self, repo: Repo, pull: Pull, message: str) -> str | None:
        """Merge head into base in the bare repository; the new base sha, or None on conflict."""
        base_sha, head_sha = self.branch_sha(repo, pull.base), self.branch_sha(repo, pull.head)
        if base_sha is None or head_sha is None:
            return None
        tree = self.git(repo, "merge-tree", "--write-tree", base_sha, head_sha, check=False)
        if tree.returncode != 0:
            return None
        commit = self.git(
            repo, "commit-tree", tree.stdout.split()[0], "-p", base_sha, "-p", head_sha, "-m", message
        ).stdout.strip()
        self.git(repo, "update-ref", f"refs/heads/{pull.base}", commit, base_sha)
        return commit
