"""The Claude generator's settings, read from ``LEVIATHAN_CLAUDE_*`` when the generator is built."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from leviathan_dagster.core.errors import ConfigError

ENV_PREFIX = "LEVIATHAN_CLAUDE_"
# The API's floor for a manual thinking budget (``budget_tokens`` must be >= 1024).
MIN_THINKING_BUDGET = 1024
_NUMBERS = {
    "max_output_tokens": int,
    "max_output_tokens_ceiling": int,
    "request_timeout_seconds": float,
    "max_retries": int,
    "retry_initial_seconds": float,
    "max_turns": int,
    "test_timeout_seconds": float,
    "bash_timeout_seconds": float,
    "context_clear_tokens": int,
}


@dataclass(frozen=True)
class ClaudeSettings:
    """Each field is ``LEVIATHAN_CLAUDE_<FIELD IN CAPITALS>``; only the key and the model are required."""

    #: The Anthropic API key (a secret: never logged, never in a repr, never given to a command).
    api_key: str = field(repr=False)
    #: The exact model id, e.g. claude-sonnet-4-6 (prices and USD budgets are keyed by it).
    model: str
    #: Another endpoint (a gateway, or the test double); default Anthropic's.
    base_url: str | None = None
    #: max_tokens of one call (lowered when the budget is tighter).
    max_output_tokens: int = 16_384
    #: A reply cut by max_tokens is asked again with twice the room, up to this many tokens.
    max_output_tokens_ceiling: int = 64_000
    #: One HTTP request (also capped by the attempt deadline).
    request_timeout_seconds: float = 300.0
    #: Retries of one call after a retryable failure.
    max_retries: int = 4
    #: First back-off when the API gives no retry-after.
    retry_initial_seconds: float = 1.0
    #: Model calls per attempt.
    max_turns: int = 40
    #: One run of the test command (also capped by the deadline).
    test_timeout_seconds: float = 600.0
    #: One sandboxed bash command.
    bash_timeout_seconds: float = 120.0
    #: Past this many conversation tokens, old tool results are cleared (they can be fetched again).
    context_clear_tokens: int = 60_000
    #: LEVIATHAN_CLAUDE_THINKING_BUDGET: unset = the model's default; ``adaptive``; ``off``; or a
    #: manual budget in tokens (>= 1024), interleaved with tool use.
    thinking: str | int | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ClaudeSettings:
        env = os.environ if environ is None else environ
        missing = [name for name in ("API_KEY", "MODEL") if not env.get(ENV_PREFIX + name)]
        if missing:
            raise ConfigError(
                f"the claude generator needs {', '.join(ENV_PREFIX + m for m in missing)}; set the API key "
                "and a model id (e.g. LEVIATHAN_CLAUDE_MODEL=claude-sonnet-4-6) in the worker's environment"
            )
        base_url = env.get(ENV_PREFIX + "BASE_URL") or None
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{ENV_PREFIX}BASE_URL must be an http(s) URL, got {base_url!r}")
        values: dict = {}
        for name, kind in _NUMBERS.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is None or raw == "":
                continue
            try:
                values[name] = kind(raw)
                if values[name] < (0 if name == "max_retries" else 1e-9):
                    raise ValueError
            except ValueError:
                raise ConfigError(
                    f"{ENV_PREFIX}{name.upper()} must be a positive number, got {raw!r}"
                ) from None
        thinking = parse_thinking(env.get(ENV_PREFIX + "THINKING_BUDGET"))
        return cls(
            api_key=env[ENV_PREFIX + "API_KEY"],
            model=env[ENV_PREFIX + "MODEL"],
            base_url=base_url,
            thinking=thinking,
            **values,
        )


def parse_thinking(raw: str | None) -> str | int | None:
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip().lower()
    if value in ("adaptive", "off"):
        return value
    try:
        budget = int(value)
    except ValueError:
        budget = 0
    if budget < MIN_THINKING_BUDGET:
        raise ConfigError(
            f"{ENV_PREFIX}THINKING_BUDGET must be 'adaptive', 'off' or a number of tokens >= "
            f"{MIN_THINKING_BUDGET}, got {raw!r}"
        )
    return budget
