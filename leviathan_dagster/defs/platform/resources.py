"""The one resource every Leviathan asset, sensor and schedule uses: where config and state live."""

from dataclasses import replace
from pathlib import Path

import dagster as dg
from pydantic import Field

from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.events.registry import open_event_log
from leviathan_dagster.core.events.store import EventStore
from leviathan_dagster.core.home import LeviathanHome, resolve_home
from leviathan_dagster.core.models import ProjectConfig, TargetConfig


class LeviathanResource(dg.ConfigurableResource):
    """Leviathan's project config (targets and policy) and home folder (event log, forge, artifacts)."""

    config_path: str = Field(description="Path of leviathan.yaml (targets and policy).")
    home: str = Field(description="Leviathan's home folder: event log, local forge, artifacts, workspaces.")
    only_target: str | None = Field(
        default=None,
        description="Schedule only this target (the CLI's `run --target`); default: all targets.",
    )
    max_attempts_per_task: int | None = Field(
        default=None,
        description="Override every target's max_attempts_per_task (the CLI's `--max-attempts`).",
    )

    def leviathan_home(self) -> LeviathanHome:
        return resolve_home(self.home)

    def project(self) -> ProjectConfig:
        # One target's invalid config must not stop the others: it is left out and reported (broken_targets).
        project = load_project_config(self.config_path_resolved(), isolate_targets=True)
        if self.max_attempts_per_task is None:
            return project
        targets = tuple(
            replace(t, policy=replace(t.policy, max_attempts_per_task=self.max_attempts_per_task))
            for t in project.targets
        )
        return replace(project, targets=targets)

    def config_path_resolved(self) -> Path:
        return Path(self.config_path).expanduser().resolve()

    def target(self, target_id: str) -> TargetConfig:
        project = self.project()
        target = project.target(target_id)
        if target is None and project.broken_target(target_id):
            raise ConfigError(
                f"target '{target_id}' has an invalid config:\n{project.broken_target(target_id)}"
            )
        if target is None:
            known = ", ".join(t.id for t in project.targets) or "none"
            raise ConfigError(f"{project.source}: no target '{target_id}' (targets: {known})")
        return target

    def event_log(self) -> EventStore:
        return open_event_log(self.leviathan_home(), self.project().event_log)
