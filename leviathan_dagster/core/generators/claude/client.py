"""The Anthropic boundary: one Messages call with declared retries, the response mapped to Leviathan's
own ``ModelReply``, every API error translated once by its error type. Nothing past this module sees an
SDK type.

Retries are declared here and nowhere else, by the rules of the SDK's own client (``_base_client``):
``x-should-retry: true|false`` from the API wins; otherwise 408, 409, 429 and 5xx (529 "overloaded"
included), connection errors and timeouts are retried, waiting what ``retry-after-ms``, ``retry-after``
(seconds or an HTTP date) says, or backing off exponentially with jitter, never past the attempt's
deadline. A retryable failure that outlasts the retries becomes TransientError: the platform's failure,
never the task's. The rest is mapped by ``error.type`` (and ``error.details.error_code``):

- authentication, billing and permission errors, and spend limits reached: ``AccountRefused`` (the
  target pauses; no attempt of any task could succeed until an operator acts);
- ``request_too_large`` (413) and a prompt longer than the context window (400): ``RequestTooLarge``,
  for the loop's context management;
- not found (a wrong model id): ConfigError; every other invalid request: GeneratorError with the
  API's message (``executor_error``).
"""

from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass
from typing import Any

import anthropic
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from leviathan_dagster.core.errors import ConfigError, GeneratorError, TransientError
from leviathan_dagster.core.generators.claude.settings import ENV_PREFIX, ClaudeSettings
from leviathan_dagster.core.generators.claude.stops import AccountRefused

__all__ = ["ClaudeClient", "ClaudeSettings", "MaxTokensTooHigh", "ModelReply", "RequestTooLarge"]

RETRY_AFTER_CAP_SECONDS = 60.0
ACCOUNT_ERROR_TYPES = frozenset({"authentication_error", "billing_error", "permission_error"})
# error.details.error_code values that say the account cannot spend (a 400 or a 429 on the wire).
ACCOUNT_ERROR_CODES = frozenset(
    {
        "enforced_spend_limit_reached",
        "contract_spend_limit_reached",
        "organization_on_hold",
        "linked_organization_spend_limit_reached",
        "linked_organization_billing_unavailable",
    }
)
_CONTEXT_MESSAGES = ("prompt is too long", "exceed context limit", "context window")
_MAX_TOKENS_LIMIT = re.compile(r"max_tokens: \d+ > (\d+)")


class RequestTooLarge(GeneratorError):
    """The request does not fit (413 ``request_too_large`` or a prompt past the context window)."""


class MaxTokensTooHigh(GeneratorError):
    """``max_tokens`` is above the model's own output limit (``limit``, from the API's message)."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class ModelReply:
    """One assistant turn as plain data. ``content`` holds every block exactly as the API sent it
    (text, tool_use, thinking with its signature, redacted_thinking, ...): it goes back verbatim."""

    content: tuple[dict, ...]
    stop_reason: str | None
    model: str
    usage: dict[str, int]
    request_id: str | None


def _reply_from(message: anthropic.types.Message) -> ModelReply:
    usage = message.usage
    return ModelReply(
        # to_dict(exclude_unset=True): the fields the API sent, no more, no fewer.
        content=tuple(block.to_dict(mode="json") for block in message.content),
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


def _is_account_problem(exc: anthropic.APIStatusError) -> bool:
    return (
        exc.status_code in (401, 402, 403)
        or exc.type in ACCOUNT_ERROR_TYPES
        or exc.error_code in ACCOUNT_ERROR_CODES
    )


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, anthropic.APIStatusError):
        if _is_account_problem(exc):
            return False
        should = exc.response.headers.get("x-should-retry")
        if should in ("true", "false"):
            return should == "true"
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return isinstance(exc, anthropic.APIConnectionError)  # includes APITimeoutError


def retry_after_seconds(headers: Any) -> float | None:
    """``retry-after-ms``, else ``retry-after`` as seconds or an HTTP date (the SDK's order)."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(headers.get(name)) / scale
        except (TypeError, ValueError):
            continue
    parsed = email.utils.parsedate_tz(headers.get("retry-after") or "")
    return None if parsed is None else float(email.utils.mktime_tz(parsed) - time.time())


class ClaudeClient:
    """One SDK client per attempt. The SDK's own retries are off: the ones declared here know the deadline."""

    def __init__(self, settings: ClaudeSettings) -> None:
        self.settings = settings
        self._client = anthropic.Anthropic(
            api_key=settings.api_key, base_url=settings.base_url, max_retries=0
        )

    def close(self) -> None:
        """Close the HTTP connections (the generator calls it when the attempt's loop ends)."""
        self._client.close()

    def create(self, *, deadline: float, **request) -> ModelReply:
        """One ``messages.create`` with retries; see the module docstring for what each failure becomes."""

        def wait(state) -> float:
            exc = state.outcome.exception()
            after = retry_after_seconds(getattr(getattr(exc, "response", None), "headers", None))
            if after is not None and after >= 0:
                return min(after, RETRY_AFTER_CAP_SECONDS)
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
    status, kind = exc.status_code, exc.type or "unknown"
    where = f" (request-id {exc.request_id})" if exc.request_id else ""
    text = exc.api_message or exc.message
    if _is_account_problem(exc):
        code = f"/{exc.error_code}" if exc.error_code else ""
        return AccountRefused(f"Anthropic API refused the account: HTTP {status} {kind}{code}{where}: {text}")
    if status in (408, 409, 429) or status >= 500:  # retried unless x-should-retry said not to
        return TransientError(f"Anthropic API failing with HTTP {status} {kind}{where}: {text}")
    if (
        status == 413
        or kind == "request_too_large"
        or (status == 400 and any(m in (text or "").lower() for m in _CONTEXT_MESSAGES))
    ):
        return RequestTooLarge(
            f"Anthropic API: the request is too large (HTTP {status} {kind}){where}: {text}"
        )
    limit = _MAX_TOKENS_LIMIT.search(text or "") if status == 400 else None
    if limit:
        return MaxTokensTooHigh(f"Anthropic API: {text}{where}", int(limit.group(1)))
    if status == 404:
        return ConfigError(f"Anthropic API: not found (HTTP 404; check {ENV_PREFIX}MODEL){where}: {text}")
    return GeneratorError(f"Anthropic API rejected the request (HTTP {status} {kind}){where}: {text}")
