"""A wire-level GitHub double: a threaded HTTP server on 127.0.0.1 that PyGithub and git talk to.

REST lives under ``/api/v3`` (GitHub Enterprise layout, so a configurable API base URL is exercised),
GraphQL at ``/api/graphql``, git smart HTTP at ``/<owner>/<repo>.git/...``. Every REST call needs
``Authorization: token|Bearer <token>`` (a personal token or an installation token), the App endpoints
need an RS256 JWT signed with the App's private key, and git needs ``Basic x-access-token:<token>``.
Responses carry GitHub's rate-limit headers; ``faults`` injects 5xx, secondary rate limits, slow
answers and rejected pushes.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import jwt

from github_double import faults as fault_kinds
from github_double.git_http import install_hooks, run_http_backend
from github_double.rest import HttpError, Rest
from github_double.state import RATE_LIMIT, App, Identity, Repo, State, Urls, iso

API_PREFIX = "/api/v3"
GRAPHQL_PATH = "/api/graphql"
MAX_JWT_LIFETIME_SECONDS = 660  # GitHub: at most 10 minutes, plus the usual 60 s of back-dated iat


class GithubDouble:
    """Start with ``with GithubDouble(tmp_path) as gh:``; add repositories, tokens and Apps."""

    def __init__(self, root: Path, clock: Callable[[], float] = time.time) -> None:
        self.state = State(Path(root), clock)
        self.faults = fault_kinds.Faults()
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) of every request
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.double = self  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.api_url = self.base_url + API_PREFIX
        self.urls = Urls(self.base_url)
        self.rest = Rest(self.state, self.urls)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> GithubDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- setup ---------------------------------------------------------------------------------
    def add_repo(self, owner: str, name: str, files: dict[str, str], *, collaborators=(), teams=()) -> Repo:
        from leviathan_dagster.demo_setup import make_repository

        path = self.state.git_root / owner / f"{name}.git"
        make_repository(path, files)
        install_hooks(path)
        repo = Repo(
            owner, name, self.state.new_id(), path, collaborators=set(collaborators), teams=set(teams)
        )
        self.state.repos[repo.full_name] = repo
        return repo

    def repo_url(self, owner: str, name: str) -> str:
        return f"{self.base_url}/{owner}/{name}.git"

    def add_token(
        self,
        token: str,
        login: str = "leviathan-bot",
        repos: set[str] | None = None,
        permissions: dict[str, str] | None = None,
    ) -> None:
        """A fine-grained token; ``permissions`` default to contents and pull requests write."""
        identity = Identity(login=login, kind="token", repos=repos)
        if permissions is not None:
            identity.permissions = dict(permissions)
        self.state.tokens[token] = identity

    def add_app(
        self,
        app_id: int,
        public_key_pem: bytes,
        installations: dict[int, set[str]],
        ttl: int = 3600,
        permissions: dict[str, str] | None = None,
    ):
        app = App(app_id, public_key_pem, installations, ttl)
        if permissions is not None:
            app.permissions = dict(permissions)
        self.state.apps[app_id] = app

    def revoke_token(self, token: str) -> None:
        """GitHub stops honouring ``token`` now (revoked, App uninstalled or its permissions changed)."""
        with self.state.lock:
            self.state.tokens.pop(token, None)

    def exhaust_rate_limit(self, login: str, reset_in: float) -> None:
        """The next REST call of ``login`` hits the primary rate limit until ``reset_in`` seconds pass."""
        self.state.usage[login] = (RATE_LIMIT, self.state.clock() + reset_in)

    def reject_next_push(
        self,
        message: str = "GH006: Protected branch update failed",
        reason: str = "protected branch hook declined",
    ) -> None:
        """The next push is refused: ``remote: error: <message>`` and ``[remote rejected] (<reason>)``."""
        self.faults.push_rejections.append({"lines": [f"error: {message}"], "reason": reason})

    def restrict_ref_creation(self, owner: str, name: str, ref_pattern: str) -> None:
        """A ruleset that forbids creating refs matching ``ref_pattern`` (GH013 on push)."""
        self.state.repos[f"{owner}/{name}"].rulesets.append({"rule": "creation", "ref": ref_pattern})

    def add_check_run(
        self,
        owner: str,
        name: str,
        sha: str,
        check_name: str,
        *,
        status: str = "completed",
        conclusion: str | None = "success",
    ) -> dict:
        """A check run on ``sha``, as GitHub Actions (another App) reports one; newest last."""
        repo = self.state.repos[f"{owner}/{name}"]
        run = self.urls.check_run(
            repo, self.state.new_id(), sha, check_name, status, conclusion, self.state.clock()
        )
        with self.state.lock:
            repo.check_runs.setdefault(sha, []).append(run)
        return run

    def pulls(self, owner: str, name: str) -> list:
        return sorted(self.state.repos[f"{owner}/{name}"].pulls.values(), key=lambda p: p.number)

    def count(self, method: str, path_suffix: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == method and p.endswith(path_suffix))

    # -- credentials ---------------------------------------------------------------------------
    def identify(self, authorization: str | None, *, git: bool) -> Identity | None:
        if not authorization:
            return None
        scheme, _, credential = authorization.partition(" ")
        if git:
            if scheme.lower() != "basic":
                return None
            try:
                _, _, credential = base64.b64decode(credential).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
        elif scheme.lower() not in ("token", "bearer"):
            return None
        # An App's JWT has two dots; so has an installation token (ghs_<app>_<jwt>), told apart by prefix.
        if not git and credential.count(".") == 2 and not credential.startswith("ghs_"):
            return self._verify_app_jwt(credential)
        return self.state.identity_for_token(credential.strip())

    def _verify_app_jwt(self, token: str) -> Identity | None:
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
            app = self.state.apps.get(int(issuer))
            if app is None:
                return None
            claims = jwt.decode(
                token,
                app.public_key_pem,
                algorithms=["RS256"],
                options={"require": ["exp", "iat", "iss"]},
                leeway=60,
            )
        except (jwt.PyJWTError, TypeError, ValueError):
            return None
        if claims["exp"] - claims["iat"] > MAX_JWT_LIFETIME_SECONDS:
            return None
        return Identity(login=f"app-{app.app_id}", kind="app", app_id=app.app_id)

    # -- App endpoints (JWT) -----------------------------------------------------------------------
    def app_endpoint(self, method: str, path: str, who: Identity) -> tuple[int, dict, object] | None:
        app = self.state.apps.get(who.app_id or -1)
        parts = path.strip("/").split("/")
        if method == "POST" and len(parts) == 4 and parts[:2] == ["app", "installations"]:
            installation = int(parts[2]) if parts[2].isdigit() else -1
            if app is None or installation not in app.installations or parts[3] != "access_tokens":
                raise HttpError(404, "Not Found")
            token, expires = self.state.issue_installation_token(app, installation)
            return (
                201,
                {},
                {
                    "token": token,
                    "expires_at": iso(expires),
                    "permissions": dict(app.permissions),
                    "repository_selection": "selected",
                },
            )
        if method == "GET" and len(parts) == 4 and parts[0] == "repos" and parts[3] == "installation":
            full = f"{parts[1]}/{parts[2]}"
            tokens_url = f"{self.api_url}/app/installations"
            for installation, repos in (app.installations if app else {}).items():
                if full in repos:
                    return (
                        200,
                        {},
                        {
                            "id": installation,
                            "app_id": app.app_id,
                            "target_type": "Organization",
                            "account": self.urls.user(parts[1], kind="Organization"),
                            "access_tokens_url": f"{tokens_url}/{installation}/access_tokens",
                            "repositories_url": f"{self.api_url}/installation/repositories",
                            "html_url": f"{self.base_url}/organizations/{parts[1]}/settings/installations",
                        },
                    )
            raise HttpError(404, "Not Found")
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GitHub.com-double"

    def log_message(self, format, *args) -> None:  # noqa: A002 - silence the default stderr log
        pass

    @property
    def double(self) -> GithubDouble:
        return self.server.double  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        # Logged before answering: once the client has its answer, a test may count the request.
        self.double.requests.append((self.command, urlsplit(self.path).path, status))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_json(self, status: int, headers: dict[str, str], data: object) -> None:
        headers = {"Content-Type": "application/json; charset=utf-8", **headers}
        self._send(status, headers, json.dumps(data).encode())

    def _handle(self) -> None:
        split = urlsplit(self.path)
        body = self._read_body()
        fault = self.double.faults.take(self.command, split.path)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.status is not None and not fault.after:
            self._send_json(fault.status, fault.headers, self._fault_body(fault))
            return
        if ".git/" in split.path:
            status, headers, payload = self._git(split.path, split.query, body)
            if fault is not None and fault.status is not None:
                status, headers, payload = fault.status, fault.headers, fault.message.encode()
            self._send(status, headers, payload)
            return
        status, headers, data = self._rest(split.path, split.query, body)
        if fault is not None and fault.status is not None:  # after=True: the work is done, the answer lost
            status, headers, data = fault.status, fault.headers, self._fault_body(fault)
        self._send_json(status, headers, data)

    @staticmethod
    def _fault_body(fault) -> object:
        if fault.body is not None:
            return fault.body
        return {"message": fault.message, "documentation_url": "https://docs.github.com/rest"}

    def _git(self, path: str, query: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        who = self.double.identify(self.headers.get("Authorization"), git=True)
        repo_name = path.split(".git/", 1)[0].strip("/")
        challenge = {"WWW-Authenticate": 'Basic realm="GitHub"', "Content-Type": "text/plain"}
        if who is None:
            return 401, challenge, b"Authentication required\n"
        if repo_name not in self.double.state.repos or not who.can_access(repo_name):
            return 404, {"Content-Type": "text/plain"}, b"Repository not found.\n"
        receive = path.endswith("/git-receive-pack") or "service=git-receive-pack" in query
        if receive and not who.can_write("contents"):
            # GitHub refuses a read-only credential before any pack is sent; git prints the text.
            message = f"Permission to {repo_name}.git denied to {who.login}.\n"
            return 403, {"Content-Type": "text/plain; charset=utf-8"}, message.encode()
        policy = None
        if path.endswith("/git-receive-pack"):
            repo = self.double.state.repos[repo_name]
            policy = {
                "kind": who.kind,
                "workflows": who.can_write("workflows"),
                "rulesets": repo.rulesets,
                "push_protection": repo.push_protection,
                "rules_url": f"{self.double.base_url}/{repo_name}/rules",
                "armed": self.double.faults.take_push_rejection(),
            }
        headers = {k.lower(): v for k, v in self.headers.items()}
        return run_http_backend(
            self.double.state.git_root,
            self.command,
            path,
            query,
            headers,
            body,
            remote_user=who.login,
            push_policy=policy,
        )

    def _rest(self, path: str, query: str, raw: bytes) -> tuple[int, dict[str, str], object]:
        double = self.double
        who = double.identify(self.headers.get("Authorization"), git=False)
        if who is None:
            return (
                401,
                {},
                {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
            )
        limit, remaining, reset = double.state.count_request(who.login)
        rate = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Used": str(limit - remaining),
            "X-RateLimit-Resource": "core",
            "X-GitHub-Request-Id": f"DOUBLE:{double.state.new_id()}",
        }
        used = double.state.usage[who.login][0]
        if used > limit:
            message = f"API rate limit exceeded for {who.login}."
            return 403, rate, {"message": message, "documentation_url": "https://docs.github.com/rest"}
        try:
            data = json.loads(raw) if raw else {}
            if path == GRAPHQL_PATH:
                status, headers, answer = double.rest.graphql(who, data)
            elif not path.startswith(API_PREFIX):
                raise HttpError(404, "Not Found")
            elif who.kind == "app":
                answer_or_none = double.app_endpoint(self.command, path[len(API_PREFIX) :], who)
                if answer_or_none is None:
                    raise HttpError(403, "Resource not accessible by integration")
                status, headers, answer = answer_or_none
            else:
                status, headers, answer = double.rest.dispatch(
                    self.command, path[len(API_PREFIX) :], query, data, who
                )
        except HttpError as exc:
            status, headers, answer = exc.answer()
        except json.JSONDecodeError:
            status, headers, answer = 400, {}, {"message": "Problems parsing JSON"}
        return status, {**rate, **headers}, answer
