"""The ``control_plane:`` section of leviathan.yaml: named tokens with roles, and the worker token key.

control_plane:
  tokens:
    - name: scheduler                      # recorded as actor_id of every event this token appends
      role: orchestrator                   # or operator (operator actions: pause, reset-breaker, ...)
      secret: {env: LEVIATHAN_CP_SCHEDULER_TOKEN}
    - name: alice
      role: operator
      secret: {env: LEVIATHAN_CP_ALICE_TOKEN}
  worker_token_key: {env: LEVIATHAN_CP_WORKER_KEY}   # per-attempt worker tokens are derived from it
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator
from pydantic.dataclasses import dataclass

from leviathan_dagster.core.config.fields import MODEL_CONFIG, env_reference, invalid

TOKEN_ROLES = ("operator", "orchestrator")
_TOKEN_FIX = (
    "write e.g. '- {name: scheduler, role: orchestrator, secret: {env: LEVIATHAN_CP_SCHEDULER_TOKEN}}'"
)
_SECRET_FIX = "write e.g. 'secret: {env: LEVIATHAN_CP_TOKEN}' (a secret is never written in the file)"
SecretReference = env_reference(_SECRET_FIX)


def _token_name(value: object) -> str:
    # Imported here: the event schemas load the whole event model, which the config does not otherwise need.
    from leviathan_dagster.core.events.schemas import is_id

    if not is_id(value):
        raise invalid("{label} must be an id ([A-Za-z0-9][A-Za-z0-9._-]*), got {got}", _TOKEN_FIX)
    return value  # type: ignore[return-value]


@dataclass(frozen=True, config=MODEL_CONFIG)
class ControlPlaneToken:
    """One named control-plane token: its name is recorded as ``actor_id`` of what it appends."""

    name: Annotated[str, BeforeValidator(_token_name)]
    """The token's name, recorded as `actor_id` of every event it appends."""
    role: Literal["operator", "orchestrator"]
    """`orchestrator` (the scheduler, workers' runs) or `operator` (pause, reset-breaker, run-now...)."""
    secret_env: SecretReference = Field(validation_alias="secret")
    """`{env: VAR}`: the environment variable holding the token."""


@dataclass(frozen=True, config=MODEL_CONFIG)
class ControlPlaneSettings:
    """The ``control_plane:`` section: named tokens, and the key per-attempt worker tokens derive from."""

    tokens: tuple[ControlPlaneToken, ...] = Field(
        (), examples=[[{"name": "scheduler", "role": "orchestrator"}]]
    )
    """The named tokens the control plane accepts (each name once)."""
    worker_key_env: SecretReference | None = Field(
        None, validation_alias="worker_token_key", examples=[{"env": "LEVIATHAN_CP_WORKER_KEY"}]
    )
    """`{env: VAR}`: the key per-attempt worker tokens are derived from; none: no worker tokens."""

    @field_validator("tokens")
    @classmethod
    def _names_are_unique(cls, tokens: tuple[ControlPlaneToken, ...]) -> tuple[ControlPlaneToken, ...]:
        names = [token.name for token in tokens]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise invalid(
                    f"{{label}}[{index}].name {name!r} is used twice", "give every token its own name"
                )
        return tokens
