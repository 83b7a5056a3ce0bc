"""Which forge serves a target, by the target's ``forge`` name."""

from __future__ import annotations

from collections.abc import Mapping

from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.forge.base import Forge
from leviathan_dagster.core.forge.local import LocalForge
from leviathan_dagster.core.forge.tick_budget import in_tick
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import TargetConfig


def forge_for(target: TargetConfig, home: LeviathanHome, environ: Mapping[str, str] | None = None) -> Forge:
    """The target's forge; ``environ`` holds the secrets it references (default: the process's).
    Inside ``tick_budget.tick_reads()`` (a sensor tick) its GitHub calls get the tick's short retries."""
    if target.forge == "local":
        return LocalForge(target.id, target.repo_url, home.root)
    if target.forge == "github":
        # Imported here: PyGithub is only loaded by processes that talk to GitHub.
        from leviathan_dagster.core.forge.github.errors import TICK_RETRY
        from leviathan_dagster.core.forge.github.forge import GithubForge

        return GithubForge(target, environ, retry=TICK_RETRY if in_tick() else None)
    raise ConfigError(
        f"target '{target.id}': forge '{target.forge}' is not available in this build "
        "(available: local, github)"
    )
