"""The worker's environment contract (seed 001), read once when the worker starts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from leviathan_dagster.core.errors import ConfigError

REQUIRED = ("TARGET_NAME", "TARGET_REPO_URL", "TARGET_BRANCH", "TASK_ID", "ATTEMPT_ID")

# Variables a test command may see. Everything else (tokens, keys, cloud credentials) is withheld:
# code the model writes or runs never gets a credential.
SAFE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "PYTHONHASHSEED")


@dataclass(frozen=True)
class WorkerEnv:
    target_id: str
    repo_url: str
    branch: str
    task_id: str
    attempt_id: str
    attempt_number: int
    home: Path
    config_path: Path
    workspace_root: Path
    # Seq of the attempt's attempt.created (LEVIATHAN_EVENT_LOG_AFTER_SEQ): the worker's events, whose
    # ids derive from its attempt, can only be after it, so their duplicate check starts there.
    log_after_seq: int | None = None
    control_plane_url: str | None = None
    # repr=False: the environment may be logged; the token never is.
    control_plane_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> WorkerEnv:
        env = os.environ if environ is None else environ
        missing = [key for key in REQUIRED if not env.get(key)]
        if missing:
            raise ConfigError(
                f"worker environment is missing {', '.join(missing)}; the executor sets these "
                "(see docs/worker.md for the full contract)"
            )
        home = Path(env.get("LEVIATHAN_HOME") or Path.home() / ".leviathan").resolve()
        try:
            number = int(env.get("ATTEMPT_NUMBER", "1"))
        except ValueError as exc:
            raise ConfigError(
                f"ATTEMPT_NUMBER must be an integer, got {env.get('ATTEMPT_NUMBER')!r}"
            ) from exc
        after = env.get("LEVIATHAN_EVENT_LOG_AFTER_SEQ") or ""
        if after and not after.isdigit():
            raise ConfigError(f"LEVIATHAN_EVENT_LOG_AFTER_SEQ must be a seq (an integer), got {after!r}")
        return cls(
            target_id=env["TARGET_NAME"],
            repo_url=env["TARGET_REPO_URL"],
            branch=env["TARGET_BRANCH"],
            task_id=env["TASK_ID"],
            attempt_id=env["ATTEMPT_ID"],
            attempt_number=number,
            home=home,
            config_path=Path(env.get("LEVIATHAN_CONFIG") or "leviathan.yaml").resolve(),
            workspace_root=Path(env.get("LEVIATHAN_WORKSPACE_DIR") or home / "workspaces").resolve(),
            log_after_seq=int(after) if after else None,
            control_plane_url=env.get("CONTROL_PLANE_URL") or None,
            control_plane_token=env.get("CONTROL_PLANE_TOKEN") or None,
        )


def sanitized_environment(workspace: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for commands run inside the workspace: an allowlist, never the worker's secrets."""
    env = os.environ if environ is None else environ
    clean = {key: env[key] for key in SAFE_ENV_KEYS if key in env}
    clean["HOME"] = str(workspace)
    clean["PYTHONDONTWRITEBYTECODE"] = "1"
    return clean
