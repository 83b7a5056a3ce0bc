"""What the GitHub double remembers: repositories (bare git repos on disk), pull requests, comments,
commit statuses, credentials (personal tokens, Apps, installation tokens) and rate-limit counters.

JSON is rendered in GitHub's REST shapes (the fields PyGithub reads), with absolute URLs under the
double's own base so PyGithub's host checks and lazy completion work unchanged.
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


class Urls:
    """Absolute URLs of the double, GitHub style (Enterprise layout: REST under /api/v3)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.api = base + "/api/v3"

    def user(self, login: str, user_id: int = 1, kind: str = "User") -> dict:
        return {
            "login": login,
            "id": user_id,
            "node_id": f"U_{user_id}",
            "type": kind,
            "site_admin": False,
            "url": f"{self.api}/users/{login}",
            "html_url": f"{self.base}/{login}",
        }

    def repo(self, repo: Repo) -> dict:
        return {
            "id": repo.id,
            "node_id": f"R_{repo.id}",
            "name": repo.name,
            "full_name": repo.full_name,
            "owner": self.user(repo.owner, kind="Organization"),
            "private": True,
            "fork": False,
            "archived": False,
            "disabled": False,
            "visibility": "private",
            "default_branch": repo.default_branch,
            "url": f"{self.api}/repos/{repo.full_name}",
            "html_url": f"{self.base}/{repo.full_name}",
            "clone_url": f"{self.base}/{repo.full_name}.git",
            "pulls_url": f"{self.api}/repos/{repo.full_name}/pulls{{/number}}",
            "permissions": {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True},
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
        }

    def branch_ref(self, state: State, repo: Repo, branch: str) -> dict:
        return {
            "label": f"{repo.owner}:{branch}",
            "ref": branch,
            "sha": state.branch_sha(repo, branch) or "0" * 40,
            "user": self.user(repo.owner, kind="Organization"),
            "repo": self.repo(repo),
        }

    def pull(self, state: State, repo: Repo, pr: Pull, *, full: bool = True) -> dict:
        url = f"{self.api}/repos/{repo.full_name}/pulls/{pr.number}"
        data = {
            "url": url,
            "id": pr.id,
            "node_id": f"PR_{pr.id}",
            "html_url": f"{self.base}/{repo.full_name}/pull/{pr.number}",
            "issue_url": f"{self.api}/repos/{repo.full_name}/issues/{pr.number}",
            "comments_url": f"{self.api}/repos/{repo.full_name}/issues/{pr.number}/comments",
            "number": pr.number,
            "state": pr.state,
            "locked": False,
            "title": pr.title,
            "body": pr.body,
            "user": self.user(pr.user, kind="Bot" if pr.user.endswith("[bot]") else "User"),
            "draft": pr.draft,
            "created_at": iso(pr.created_at),
            "updated_at": iso(pr.updated_at),
            "closed_at": iso(pr.closed_at),
            "merged_at": iso(pr.merged_at),
            "merge_commit_sha": pr.merge_commit_sha,
            "requested_reviewers": [self.user(r) for r in pr.requested_reviewers],
            "requested_teams": [{"slug": t, "name": t} for t in pr.requested_teams],
            "head": self.branch_ref(state, repo, pr.head),
            "base": self.branch_ref(state, repo, pr.base),
            "author_association": "NONE",
        }
        if full:  # the single-PR endpoint adds these
            data.update(
                merged=pr.merged,
                mergeable=None if pr.state != "open" else True,
                mergeable_state="draft" if pr.draft else "clean",
                comments=len(repo.comments.get(pr.number, [])),
            )
        return data

    def check_run(
        self, repo: Repo, run_id: int, sha: str, name: str, status: str, conclusion: str | None, at: float
    ) -> dict:
        now = iso(at)
        return {
            "id": run_id,
            "head_sha": sha,
            "node_id": f"CR_{run_id}",
            "external_id": "",
            "url": f"{self.api}/repos/{repo.full_name}/check-runs/{run_id}",
            "html_url": f"{self.base}/{repo.full_name}/runs/{run_id}",
            "details_url": f"{self.base}/{repo.full_name}/actions/runs/{run_id}/job/{run_id}",
            "status": status,
            "conclusion": conclusion if status == "completed" else None,
            "started_at": now,
            "completed_at": now if status == "completed" else None,
            "output": {
                "title": None,
                "summary": None,
                "text": None,
                "annotations_count": 0,
                "annotations_url": f"{self.api}/repos/{repo.full_name}/check-runs/{run_id}/annotations",
            },
            "name": name,
            "check_suite": {"id": run_id + 1},
            "app": None,
            "pull_requests": [],
        }
