"""Where a GitHub target lives: its REST base URL and ``owner/name``, from the ``github:`` section or
the https ``repo_url`` (github.com, GitHub Enterprise Cloud with data residency, Enterprise Server)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.models import TargetConfig

PUBLIC_API_URL = "https://api.github.com"
_PATH_RE = re.compile(r"^/([A-Za-z0-9][A-Za-z0-9-]*)/([A-Za-z0-9._-]+?)(?:\.git)?/?$")


def derive_location(target: TargetConfig) -> tuple[str, str]:
    """(api_url, "owner/name") from the ``github:`` section, else from the https ``repo_url``."""
    parts = urlsplit(target.repo_url)
    if parts.scheme not in ("https", "http"):
        raise ConfigError(
            f"target '{target.id}': forge 'github' needs an https repo_url, got {target.repo_url!r}. "
            "Fix: write e.g. 'repo_url: https://github.com/acme/service.git'"
        )
    if parts.username or parts.password:
        raise ConfigError(
            f"target '{target.id}': repo_url must not carry credentials. Fix: remove them from the URL "
            "and reference the token under secrets: (github_token: {env: GITHUB_TOKEN})"
        )
    settings = target.github
    match = _PATH_RE.match(parts.path)
    repository = settings.repository or (f"{match.group(1)}/{match.group(2)}" if match else None)
    if repository is None:
        raise ConfigError(
            f"target '{target.id}': cannot tell owner/name from repo_url {target.repo_url!r}. "
            "Fix: set 'github: {repository: owner/name}'"
        )
    if settings.api_url:
        return settings.api_url, repository
    return api_url_for(parts.scheme, parts.netloc), repository


def api_url_for(scheme: str, host: str) -> str:
    """The REST base URL of a GitHub host: github.com, GitHub Enterprise Cloud with data residency
    (``SUBDOMAIN.ghe.com`` serves its API at ``api.SUBDOMAIN.ghe.com``), or Enterprise Server
    (``/api/v3`` on the host itself)."""
    name = host.lower()
    if name == "github.com":
        return PUBLIC_API_URL
    if name.endswith(".ghe.com"):
        return f"https://api.{name}"
    return f"{scheme}://{host}/api/v3"
