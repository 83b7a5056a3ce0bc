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
from pathlib import Path
from typing import Any

import yaml

from leviathan_dagster.core.config.sections import target_section
from leviathan_dagster.core.config.yaml_nodes import Reporter, YamlDocument, describe
from leviathan_dagster.core.models import GithubSettings

KEYS = ("api_url", "repository", "app_id", "installation_id", "draft_until_green", "timeout_seconds")
_REPOSITORY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+$")


@target_section("github")
def parse_github(
    doc: YamlDocument, node: yaml.Node, who: str, report: Reporter, base_dir: Path
) -> GithubSettings:
    if not isinstance(node, yaml.MappingNode):
        report.error(
            node,
            who,
            f"field 'github' must be a mapping, got {describe(node)}",
            "write e.g. 'github: {app_id: 1}'",
        )
        return GithubSettings()
    values: dict[str, Any] = {}
    items = report.items(node, who)
    for name, (key, value_node) in items.items():
        value = doc.value(value_node)
        if name == "api_url":
            if not isinstance(value, str) or not re.match(r"^https?://[^/\s@]+(/\S*)?$", value):
                report.error(
                    value_node,
                    who,
                    f"github.api_url must be an http(s) URL without credentials, got {describe(value_node)}",
                    "write e.g. 'api_url: https://github.example.com/api/v3'",
                )
            else:
                values[name] = value.rstrip("/")
        elif name == "repository":
            if not isinstance(value, str) or not _REPOSITORY_RE.match(value):
                report.error(
                    value_node,
                    who,
                    f"github.repository must be 'owner/name', got {describe(value_node)}",
                    "write e.g. 'repository: acme/service'",
                )
            else:
                values[name] = value
        elif name in ("app_id", "installation_id", "timeout_seconds"):
            # GitHub ids are 64-bit; a request timeout beyond 10 minutes is a typo, not a setting.
            maximum = 600 if name == "timeout_seconds" else 2**63 - 1
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
                report.error(
                    value_node,
                    who,
                    f"github.{name} must be an integer from 1 to {maximum:,}, got {describe(value_node)}",
                    f"write e.g. '{name}: {15 if name == 'timeout_seconds' else 12345}'",
                )
            else:
                values[name] = value
        elif name == "draft_until_green":
            if not isinstance(value, bool):
                report.error(
                    value_node,
                    who,
                    f"github.draft_until_green must be true or false, got {describe(value_node)}",
                    "write 'draft_until_green: true'",
                )
            else:
                values[name] = value
        else:
            report.unknown_key(
                key, who, f"field 'github.{name}'", KEYS, items, f" (known: {', '.join(KEYS)})"
            )
    return GithubSettings(**values)
