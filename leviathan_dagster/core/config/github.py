"""The ``github:`` section of a target (forge ``github``).

targets:
  - id: service
    repo_url: https://github.example.com/acme/service.git
    forge: github
    github:
      api_url: https://github.example.com/api/v3   # optional (derived from repo_url)
      repository: acme/service                      # optional (derived from repo_url)
      app_id: 12345                                 # GitHub App auth; else secrets.github_token
      installation_id: 678                          # optional (looked up for the repository)
      draft_until_green: true                       # optional
      timeout_seconds: 15                           # optional
    secrets:
      github_token: {env: GITHUB_TOKEN}             # or github_app_private_key: {env: GITHUB_APP_PRIVATE_KEY}
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic.dataclasses import dataclass

from leviathan_dagster.core.config.fields import MODEL_CONFIG, matching

_API_URL_RE = re.compile(r"https?://[^/\s@]+(/\S*)?")
_REPOSITORY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+")
# GitHub ids are 64-bit.
_MAX_ID = 2**63 - 1

ApiUrl = Annotated[
    matching(_API_URL_RE, "must be an http(s) URL without credentials"),
    AfterValidator(lambda url: url.rstrip("/")),
]
Repository = matching(_REPOSITORY_RE, "must be 'owner/name'")


@dataclass(frozen=True, config=MODEL_CONFIG)
class GithubSettings:
    """The ``github:`` section of a target (forge ``github``). Secrets stay under ``secrets:``
    (``github_token``, or ``github_app_private_key`` with ``app_id``), as environment references."""

    api_url: ApiUrl | None = Field(None, examples=["https://github.example.com/api/v3"])
    """REST base URL; none: derived from `repo_url` (api.github.com, or `https://<host>/api/v3` for
    Enterprise)."""
    repository: Repository | None = Field(None, examples=["acme/service"])
    """`owner/name`; none: derived from an https `repo_url`."""
    app_id: int | None = Field(None, strict=True, ge=1, le=_MAX_ID, examples=[12345])
    """GitHub App authentication (with the secret `github_app_private_key`); none: the `github_token`
    secret."""
    installation_id: int | None = Field(None, strict=True, ge=1, le=_MAX_ID, examples=[12345])
    """The App's installation; none: looked up for the repository."""
    draft_until_green: bool = Field(False, strict=True)
    """Open PRs as drafts; they are marked ready for review once the head commit's status is green."""
    timeout_seconds: int = Field(15, strict=True, ge=1, le=600)
    """Seconds one HTTP request may take before it is abandoned (then retried as a transient failure);
    beyond 10 minutes it is a typo."""
