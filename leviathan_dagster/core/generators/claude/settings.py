"""The Claude generator's settings, read from ``LEVIATHAN_CLAUDE_*`` when the generator is built."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated

from pydantic import BeforeValidator, Field
from pydantic.dataclasses import dataclass

from leviathan_dagster.core.config.env_settings import read_env_settings
from leviathan_dagster.core.config.fields import MODEL_CONFIG, invalid

ENV_PREFIX = "LEVIATHAN_CLAUDE_"
# The API's floor for a manual thinking budget (``budget_tokens`` must be >= 1024).
MIN_THINKING_BUDGET = 1024


def parse_thinking(raw: object) -> str | int | None:
    """``adaptive``, ``off``, a manual budget in tokens (>= MIN_THINKING_BUDGET), or None (unset)."""
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None
    value = raw.strip().lower() if isinstance(raw, str) else raw
    if value in ("adaptive", "off"):
        return value  # type: ignore[return-value]
    try:
        budget = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        budget = 0
    if isinstance(value, bool) or budget < MIN_THINKING_BUDGET:
        raise invalid(
            f"{{label}} must be 'adaptive', 'off' or a number of tokens >= {MIN_THINKING_BUDGET}, got {{got}}"
        )
    return budget


def _http_url(value: object) -> object:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise invalid("{label} must be an http(s) URL, got {got}")
    return value


@dataclass(frozen=True, config=MODEL_CONFIG)
class ClaudeSettings:
    """Each field is ``LEVIATHAN_CLAUDE_<FIELD IN CAPITALS>``; only the key and the model are required."""

    api_key: str = dataclasses.field(repr=False)
    """The Anthropic API key (a secret: never logged, never in a repr, never given to a command)."""
    model: str
    """The exact model id, e.g. claude-sonnet-4-6 (prices and USD budgets are keyed by it)."""
    base_url: Annotated[str | None, BeforeValidator(_http_url)] = None
    """Another endpoint (a gateway, or the test double); default Anthropic's."""
    max_output_tokens: int = Field(16_384, gt=0)
    """max_tokens of one call (lowered when the budget is tighter)."""
    max_output_tokens_ceiling: int = Field(64_000, gt=0)
    """A reply cut by max_tokens is asked again with twice the room, up to this many tokens."""
    request_timeout_seconds: float = Field(300.0, gt=0)
    """One HTTP request (also capped by the attempt deadline)."""
    max_retries: int = Field(4, ge=0)
    """Retries of one call after a retryable failure."""
    retry_initial_seconds: float = Field(1.0, gt=0)
    """First back-off when the API gives no retry-after."""
    max_turns: int = Field(40, gt=0)
    """Model calls per attempt."""
    test_timeout_seconds: float = Field(600.0, gt=0)
    """One run of the test command (also capped by the deadline)."""
    bash_timeout_seconds: float = Field(120.0, gt=0)
    """One sandboxed bash command."""
    context_clear_tokens: int = Field(60_000, gt=0)
    """Past this many conversation tokens, old tool results are cleared (they can be fetched again)."""
    thinking: Annotated[str | int | None, BeforeValidator(parse_thinking)] = Field(
        None, validation_alias=ENV_PREFIX + "THINKING_BUDGET"
    )
    """`LEVIATHAN_CLAUDE_THINKING_BUDGET`: unset = the model's default; `adaptive`; `off`; or a manual
    budget in tokens (>= 1024), interleaved with tool use."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ClaudeSettings:
        return read_env_settings(
            cls,
            environ,
            prefix=ENV_PREFIX,
            what="the claude generator",
            missing_fix="set the API key and a model id (e.g. LEVIATHAN_CLAUDE_MODEL=claude-sonnet-4-6) "
            "in the worker's environment",
        )
