"""The Anthropic boundary: settings from the environment, one Messages call with declared retries, and
the response mapped to Leviathan's own ``ModelReply``. Nothing past this module sees an SDK type.

Retries are declared here and nowhere else. Retryable: 429 rate limits, 5xx (529 "overloaded"
included), connection errors and timeouts, waiting what ``retry-after`` says or backing off
exponentially with jitter, never past the attempt's deadline. Everything else (400, 401, 403, 404)
aborts at once. A retryable failure that outlasts the retries becomes TransientError: it is the
platform's failure, never the task's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import anthropic
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from leviathan_dagster.core.errors import ConfigError, GeneratorError, TransientError

ENV_PREFIX = "LEVIATHAN_CLAUDE_"
RETRY_AFTER_CAP_SECONDS = 60.0


@dataclass(frozen=True)
class ClaudeSettings:
    """The Claude generator's settings, read from ``LEVIATHAN_CLAUDE_*`` when the generator is built."""

    #: LEVIATHAN_CLAUDE_API_KEY: the Anthropic API key (a secret: never logged, never in a repr).
    api_key: str = field(repr=False)
    #: LEVIATHAN_CLAUDE_MODEL: the model id, e.g. claude-sonnet-4-6.
    model: str
    #: LEVIATHAN_CLAUDE_BASE_URL: another endpoint (a gateway, or the test double); default Anthropic's.
    base_url: str | None = None
    #: LEVIATHAN_CLAUDE_MAX_OUTPUT_TOKENS: max_tokens of one call (lowered when the budget is tighter).
    max_output_tokens: int = 8192
    #: LEVIATHAN_CLAUDE_REQUEST_TIMEOUT_SECONDS: one HTTP request (also capped by the attempt deadline).
    request_timeout_seconds: float = 300.0
    #: LEVIATHAN_CLAUDE_MAX_RETRIES: retries of one call after a retryable failure.
    max_retries: int = 4
    #: LEVIATHAN_CLAUDE_RETRY_INITIAL_SECONDS: first back-off when the API gives no retry-after.
    retry_initial_seconds: float = 1.0
    #: LEVIATHAN_CLAUDE_MAX_TURNS: model calls per attempt.
    max_turns: int = 40
    #: LEVIATHAN_CLAUDE_TEST_TIMEOUT_SECONDS: one run of the test command (also capped by the deadline).
    test_timeout_seconds: float = 600.0

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
        numbers = {
            "max_output_tokens": int,
            "request_timeout_seconds": float,
            "max_retries": int,
            "retry_initial_seconds": float,
            "max_turns": int,
            "test_timeout_seconds": float,
        }
        values: dict = {}
        for name, kind in numbers.items():
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
        return cls(
            api_key=env[ENV_PREFIX + "API_KEY"], model=env[ENV_PREFIX + "MODEL"], base_url=base_url, **values
        )


@dataclass(frozen=True)
class ModelReply:
    """One assistant turn as plain data: content blocks as dicts (text / tool_use), stop reason, tokens."""

    content: tuple[dict, ...]
    stop_reason: str | None
    model: str
    usage: Mapping[str, int]
    request_id: str | None


def _reply_from(message: anthropic.types.Message) -> ModelReply:
    blocks = []
    for block in message.content:
        if block.type == "text":
            blocks.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            blocks.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
    usage = message.usage
    return ModelReply(
        content=tuple(blocks),
        stop_reason=message.stop_reason,
        model=message.model,
        usage={
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens or 0,
            "cache_read_input_tokens": usage.cache_read_input_tokens or 0,
        },
        request_id=getattr(message, "_request_id", None),
    )


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, anthropic.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return isinstance(exc, anthropic.APIConnectionError)  # includes APITimeoutError


class ClaudeClient:
    """One SDK client per attempt. The SDK's own retries are off: the ones declared here know the deadline."""

    def __init__(self, settings: ClaudeSettings) -> None:
        self.settings = settings
        self._client = anthropic.Anthropic(
            api_key=settings.api_key, base_url=settings.base_url, max_retries=0
        )

    def create(self, *, deadline: float, **request) -> ModelReply:
        """One ``messages.create`` with retries; TransientError when the API stays unavailable."""

        def wait(state) -> float:
            exc = state.outcome.exception()
            header = getattr(getattr(exc, "response", None), "headers", {}).get("retry-after")
            try:
                return min(float(header), RETRY_AFTER_CAP_SECONDS)
            except (TypeError, ValueError):
                return backoff(state)

        first = self.settings.retry_initial_seconds
        backoff = wait_exponential_jitter(multiplier=first, max=30.0, jitter=first)
        retrying = Retrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self.settings.max_retries + 1)
            | stop_before_delay(max(0.0, deadline - time.monotonic())),
            wait=wait,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    timeout = min(
                        self.settings.request_timeout_seconds, max(0.1, deadline - time.monotonic())
                    )
                    return _reply_from(self._client.messages.create(timeout=timeout, **request))
        except anthropic.APIStatusError as exc:
            raise _translate(exc) from None
        except anthropic.APIConnectionError as exc:
            kind = "timed out" if isinstance(exc, anthropic.APITimeoutError) else "could not connect"
            raise TransientError(f"Anthropic API {kind} after {self.settings.max_retries} retries") from None
        raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover


def _translate(exc: anthropic.APIStatusError) -> Exception:
    """Our error for an HTTP error. The SDK's message holds the API's error text, never the key."""
    status, request_id = exc.status_code, getattr(exc, "request_id", None)
    where = f" (request-id {request_id})" if request_id else ""
    if _retryable(exc):
        return TransientError(f"Anthropic API still failing with HTTP {status} after retries{where}")
    if status in (401, 403):
        return ConfigError(f"Anthropic API refused {ENV_PREFIX}API_KEY (HTTP {status}){where}")
    if status == 404:
        return ConfigError(
            f"Anthropic API: not found (HTTP 404; check {ENV_PREFIX}MODEL){where}: {exc.message}"
        )
    return GeneratorError(f"Anthropic API rejected the request (HTTP {status}){where}: {exc.message}")
