"""Credentials of the GitHub forge: a personal token, or a GitHub App's short-lived installation token;
and how git gets them without ever writing them into a URL, a command line or ``.git/config``.

git receives the token per command as ``http.<origin>/.extraHeader`` through ``GIT_CONFIG_COUNT`` /
``GIT_CONFIG_KEY_0`` / ``GIT_CONFIG_VALUE_0`` in its environment: not in ``argv`` (visible in ``ps`` and
echoed in git's error messages), not in the remote URL (stored in ``.git/config`` by clone), and scoped
to the repository's origin so a submodule on another host never sees it.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from github import Auth, GithubIntegration

from leviathan_dagster.core.config.secrets import resolve_secret
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.models import TargetConfig
from leviathan_dagster.core.redaction import register_secret

# Installation tokens live one hour. A token is replaced this long before it expires, so a clone, a
# test run and a push started with it never meet an expired credential half-way.
REFRESH_MARGIN_SECONDS = 300.0

# Granted installation tokens, shared by every InstallationTokens of this process: a sensor tick or an
# attempt builds a fresh forge, and exchanging a new token each time would spend a request (and a line
# in the App's audit log) per tick. Keyed by API URL, App, installation (or repository) and a digest
# of the private key, so a rotated key or another GitHub never reuses a token.
_granted: dict[tuple[str, int, str, str], tuple[str, float, int]] = {}
_granted_lock = threading.Lock()


class TokenSource:
    """Where the forge's current token comes from."""

    def token(self) -> str:
        raise NotImplementedError


class StaticToken(TokenSource):
    def __init__(self, token: str) -> None:
        self._token = token

    def token(self) -> str:
        return self._token


class InstallationTokens(TokenSource):
    """A GitHub App's installation token: exchanged for an RS256 JWT signed with the App's private key,
    cached (across forges of this process), and refreshed ``REFRESH_MARGIN_SECONDS`` before it expires."""

    def __init__(
        self,
        *,
        app_id: int,
        private_key: str,
        installation_id: int | None,
        repository: str,
        api_url: str,
        timeout: int,
        refresh_margin: float = REFRESH_MARGIN_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._integration = GithubIntegration(
            auth=Auth.AppAuth(app_id, private_key), base_url=api_url, timeout=timeout, retry=None
        )
        key_digest = hashlib.sha256(private_key.encode()).hexdigest()
        self._cache_key = (api_url, app_id, str(installation_id or repository), key_digest)
        self._installation_id = installation_id
        self._repository = repository
        self._refresh_margin = refresh_margin
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.refreshes = 0

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at - self._refresh_margin:
                self._refresh()
            assert self._token is not None
            return self._token

    def close(self) -> None:
        self._integration.close()

    def invalidate(self) -> bool:
        """Forget the current token here and in the process-wide cache (GitHub refused it); False when
        there was none, so a 401 on the exchange itself is not retried."""
        with self._lock:
            dropped, self._token, self._expires_at = self._token, None, 0.0
            with _granted_lock:
                if dropped is not None and _granted.get(self._cache_key, (None,))[0] == dropped:
                    del _granted[self._cache_key]
        return dropped is not None

    def _refresh(self) -> None:
        with _granted_lock:
            shared = _granted.get(self._cache_key)
        if shared and self._clock() < shared[1] - self._refresh_margin:
            self._token, self._expires_at, self._installation_id = shared
            return
        if self._installation_id is None:
            owner, name = self._repository.split("/", 1)
            self._installation_id = self._integration.get_repo_installation(owner, name).id
        granted = self._integration.get_access_token(self._installation_id)
        self._token, self._expires_at = granted.token, granted.expires_at.timestamp()
        register_secret(self._token)  # redacted by value wherever it might be echoed
        with _granted_lock:
            _granted[self._cache_key] = (self._token, self._expires_at, self._installation_id)
        self.refreshes += 1


class SourceAuth(Auth.Auth):
    """PyGithub authentication that asks the TokenSource on every request (so refreshes apply)."""

    def __init__(self, source: TokenSource) -> None:
        self._source = source

    @property
    def token_type(self) -> str:
        return "token"

    @property
    def token(self) -> str:
        return self._source.token()

    @property
    def _masked_token(self) -> str:
        return "token (removed)"


def token_source_for(
    target: TargetConfig,
    environ: Mapping[str, str],
    *,
    repository: str,
    api_url: str,
    clock: Callable[[], float] = time.time,
) -> TokenSource:
    """The target's credential: a GitHub App's installation tokens when ``github.app_id`` is set, else
    its token; ConfigError naming the secret and the fix when it is missing."""
    settings = target.github
    if settings.app_id is not None:
        key = resolve_secret(target, "github_app_private_key", environ)
        if key is None:
            env = target.secret_env.get("github_app_private_key")
            raise ConfigError(
                f"target '{target.id}': github.app_id is set but the App's private key is not available"
                + (f" (environment variable {env} is empty)" if env else "")
                + ". Fix: add 'github_app_private_key: {env: GITHUB_APP_PRIVATE_KEY}' under secrets: "
                "and export the PEM in that variable"
            )
        return InstallationTokens(
            app_id=settings.app_id,
            private_key=key,
            installation_id=settings.installation_id,
            repository=repository,
            api_url=api_url,
            timeout=settings.timeout_seconds,
            clock=clock,
        )
    token = resolve_secret(target, "github_token", environ)
    if token is None:
        env = target.secret_env.get("github_token")
        raise ConfigError(
            f"target '{target.id}': forge 'github' needs a token"
            + (f" (environment variable {env} is empty)" if env else "")
            + ". Fix: add 'github_token: {env: GITHUB_TOKEN}' under secrets: and export the token, "
            "or configure a GitHub App (github.app_id and secret github_app_private_key)"
        )
    return StaticToken(token)


def git_auth_env(remote_url: str, token: str) -> dict[str, str]:
    """Environment that lets one git command authenticate to ``remote_url``'s origin with ``token``."""
    parts = urlsplit(remote_url)
    origin = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "") + "/"
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode("ascii")
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"http.{origin}.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
    }
