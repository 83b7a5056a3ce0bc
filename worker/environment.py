"""The worker's environment contract (seed 001), read once when the worker starts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field
from pydantic.dataclasses import dataclass

from leviathan_dagster.core.config.env_settings import read_env_settings
from leviathan_dagster.core.config.fields import MODEL_CONFIG

# Variables a test command may see. Everything else (tokens, keys, cloud credentials) is withheld:
# code the model writes or runs never gets a credential.
SAFE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "PYTHONHASHSEED")


@dataclass(frozen=True, config=MODEL_CONFIG)
class WorkerEnv:
    """The variables the executor gives the worker (docs/worker.md), each named by its field's alias."""

    target_id: str = Field(validation_alias="TARGET_NAME")
    """The target's id."""
    repo_url: str = Field(validation_alias="TARGET_REPO_URL")
    """Where the worker clones the target from."""
    branch: str = Field(validation_alias="TARGET_BRANCH")
    """The target's base branch."""
    task_id: str = Field(validation_alias="TASK_ID")
    """The task the attempt works on."""
    attempt_id: str = Field(validation_alias="ATTEMPT_ID")
    """The attempt's id (its events' ids derive from it)."""
    attempt_number: int = Field(1, ge=1, validation_alias="ATTEMPT_NUMBER")
    """The attempt's number for its task, from 1."""
    home: Path | None = Field(None, validation_alias="LEVIATHAN_HOME")
    """Leviathan's state; unset: ~/.leviathan."""
    config_path: Path = Field(Path("leviathan.yaml"), validation_alias="LEVIATHAN_CONFIG")
    """The project config the worker reads its target from."""
    workspace_root: Path | None = Field(None, validation_alias="LEVIATHAN_WORKSPACE_DIR")
    """Where attempt workspaces are made; unset: <home>/workspaces."""
    log_after_seq: int | None = Field(None, ge=0, validation_alias="LEVIATHAN_EVENT_LOG_AFTER_SEQ")
    """Seq of the attempt's attempt.created: the worker's events, whose ids derive from its attempt, can
    only be after it, so their duplicate check starts there."""
    control_plane_url: str | None = Field(None, validation_alias="CONTROL_PLANE_URL")
    """Where the worker posts its events; unset: it appends to the configured event log itself."""
    control_plane_token: str | None = Field(None, repr=False, validation_alias="CONTROL_PLANE_TOKEN")
    """The worker's control-plane token (repr=False: the environment may be logged; the token never is)."""

    def __post_init__(self) -> None:
        # Paths are made absolute once, here; the defaults depend on each other (the workspaces live under
        # the home), so they are filled in after validation. Frozen: hence object.__setattr__.
        home = (self.home or Path.home() / ".leviathan").resolve()
        object.__setattr__(self, "home", home)
        object.__setattr__(self, "config_path", self.config_path.resolve())
        object.__setattr__(self, "workspace_root", (self.workspace_root or home / "workspaces").resolve())

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> WorkerEnv:
        return read_env_settings(
            cls,
            environ,
            what="the worker",
            missing_fix="the executor sets these (see docs/worker.md for the full contract)",
        )


def sanitized_environment(workspace: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for commands run inside the workspace: an allowlist, never the worker's secrets."""
    env = os.environ if environ is None else environ
    clean = {key: env[key] for key in SAFE_ENV_KEYS if key in env}
    clean["HOME"] = str(workspace)
    clean["PYTHONDONTWRITEBYTECODE"] = "1"
    return clean
