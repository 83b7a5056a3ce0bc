"""Leviathan's home folder: where the embedded defaults keep their state.

<home>/events/events.ndjson     hash-chained event log (NDJSON backend)
<home>/events/events.ndjson.projections/  projection snapshots of that log (derived, safe to delete)
<home>/forge/<target>/pulls/    local forge pull-request records
<home>/artifacts/<attempt>/     attempt artifacts with their SHA-256 manifest
<home>/workspaces/<attempt>/    fresh clone per attempt (removed after the attempt)
<home>/mirrors/                 bare mirrors used to read backlogs from base branches
<home>/cache/backlogs/          parsed backlogs by git blob id (safe to delete)
<home>/dagster/                 DAGSTER_HOME of the embedded Dagster instance
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "LEVIATHAN_HOME"
CONFIG_ENV = "LEVIATHAN_CONFIG"


@dataclass(frozen=True)
class LeviathanHome:
    root: Path

    @property
    def events_path(self) -> Path:
        return self.root / "events" / "events.ndjson"

    @property
    def artifacts_root(self) -> Path:
        return self.root / "artifacts"

    def artifacts_dir(self, attempt_id: str) -> Path:
        return self.artifacts_root / attempt_id

    @property
    def workspaces(self) -> Path:
        return self.root / "workspaces"

    @property
    def mirrors(self) -> Path:
        return self.root / "mirrors"

    @property
    def backlog_cache(self) -> Path:
        return self.root / "cache" / "backlogs"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"


def resolve_home(
    explicit: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None
) -> LeviathanHome:
    """``explicit``, else ``$LEVIATHAN_HOME``, else ``~/.leviathan``; always absolute."""
    env = os.environ if environ is None else environ
    raw = explicit or env.get(HOME_ENV) or Path.home() / ".leviathan"
    return LeviathanHome(Path(raw).expanduser().resolve())


def resolve_config_path(
    explicit: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """``explicit``, else ``$LEVIATHAN_CONFIG``, else ``./leviathan.yaml``."""
    env = os.environ if environ is None else environ
    return Path(explicit or env.get(CONFIG_ENV) or "leviathan.yaml").expanduser().resolve()
