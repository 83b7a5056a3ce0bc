"""PyGithub's and requests' errors translated once into Leviathan's, and the declared retry policy.

Retryable (``TransientError``): 5xx, 429, primary and secondary rate limits, timeouts, connection
errors. The waits follow GitHub's rules for integrators: ``Retry-After`` when GitHub sends it; the
primary limit (``X-RateLimit-Remaining: 0``) until ``X-RateLimit-Reset``; a secondary limit without
either at least a minute, then exponentially longer (with jitter, up to a ceiling) while it persists
(retrying sooner may get the integration banned); anything else exponential with jitter from a second.
Never retried: bad credentials and missing permissions (``ConfigError``; a 401 is ``GithubAuthError``,
so the forge can exchange a revoked installation token once), 404 and a 422 naming a pull request's
missing head or base branch (``NotFoundError``), other 405/409/422 (``ConflictError``). A wait GitHub
asks for that is longer than ``max_wait`` is not slept through here: the error goes up as transient
(an ``infrastructure`` failure, retried later, never counted).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import requests
import tenacity
from github import GithubException

from leviathan_dagster.core.errors import (
    ConfigError,
    ConflictError,
    LeviathanError,
    NotFoundError,
    TransientError,
)
from leviathan_dagster.core.redaction import redact

T = TypeVar("T")
_SECONDARY_WORDS = ("secondary rate limit", "abuse detection")


class GithubTransientError(TransientError):
    """A transient GitHub failure; ``retry_after`` is the wait GitHub asked for (seconds), if any;
    ``secondary``: GitHub's secondary (abuse) rate limit, which asks for long, growing waits."""

    def __init__(self, message: str, retry_after: float | None = None, *, secondary: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.secondary = secondary


class GithubAuthError(ConfigError):
    """401: the credential is missing, expired or revoked."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    initial_backoff: float = 1.0
    max_backoff: float = 30.0
    # The longest wait GitHub may ask for (Retry-After, X-RateLimit-Reset) slept through in one call.
    max_wait: float = 120.0
    # Secondary rate limit without Retry-After: GitHub asks for at least a minute, then exponential
    # backoff; +up to secondary_jitter of each wait, never above secondary_max_wait.
    secondary_min_wait: float = 60.0
    secondary_max_wait: float = 300.0
    secondary_jitter: float = 0.2
    # False: a secondary limit is not waited out at all (a sensor tick's reads: tick_budget.py).
    wait_out_secondary: bool = True
    # The most one call may sleep in all (None: bounded by attempts and max_wait only).
    max_total_sleep: float | None = None
    sleep: Callable[[float], None] = time.sleep
    # What "now" is when X-RateLimit-Reset is read (injected by tests together with ``sleep``).
    clock: Callable[[], float] = time.time


# A sensor tick's reads (core/forge/tick_budget.py): two quick retries of a 5xx or a dropped
# connection; a secondary limit, or a wait GitHub asks for beyond TICK_MAX_WAIT_SECONDS, gives up at
# once; all sleeps of one call stay under TICK_MAX_SLEEP_SECONDS. The target is read again next tick.
TICK_MAX_SLEEP_SECONDS = 5.0
TICK_MAX_WAIT_SECONDS = 3.0
TICK_RETRY = RetryPolicy(
    attempts=3,
    initial_backoff=0.5,
    max_backoff=2.0,
    max_wait=TICK_MAX_WAIT_SECONDS,
    wait_out_secondary=False,
    max_total_sleep=TICK_MAX_SLEEP_SECONDS,
)


def _retry_after(headers: dict | None, now: float) -> float | None:
    headers = {str(k).lower(): v for k, v in (headers or {}).items()}
    if str(headers.get("retry-after", "")).strip().isdigit():
        return float(headers["retry-after"])
    if headers.get("x-ratelimit-remaining") == "0" and str(headers.get("x-ratelimit-reset", "")).isdigit():
        # +1: the reset second itself may still be limited.
        return max(0.0, float(headers["x-ratelimit-reset"]) - now) + 1.0
    return None


def translate(
    exc: BaseException, what: str, secrets: Iterable[str | None] = (), now: float | None = None
) -> LeviathanError:
    """Leviathan's error for a PyGithub/requests failure of ``what`` (message redacted)."""
    secrets = list(secrets)
    if isinstance(exc, LeviathanError):
        return exc
    if isinstance(exc, requests.Timeout):
        return GithubTransientError(redact(f"GitHub {what}: timed out ({exc})", secrets))
    if isinstance(exc, requests.RequestException):
        return GithubTransientError(redact(f"GitHub {what}: connection failed ({exc})", secrets))
    if not isinstance(exc, GithubException):
        return LeviathanError(redact(f"GitHub {what}: {type(exc).__name__}: {exc}", secrets))
    status = exc.status
    data = exc.data if isinstance(exc.data, dict) else {}
    message = str(data.get("message") or exc.message or exc.data or "")
    detail = "; ".join(str(e.get("message") or e) for e in data.get("errors") or [] if e)
    text = redact(f"GitHub {what}: {status} {message}" + (f" ({detail})" if detail else ""), secrets)
    wait = _retry_after(exc.headers, time.time() if now is None else now)
    secondary = status in (403, 429) and any(word in message.lower() for word in _SECONDARY_WORDS)
    primary = status in (403, 429) and "rate limit" in message.lower()
    if status == 429 or status >= 500 or secondary or (status == 403 and (primary or wait is not None)):
        return GithubTransientError(text, wait, secondary=secondary)
    if status == 401:
        return GithubAuthError(
            f"{text}. Fix: check the target's github_token (or github_app_private_key and github.app_id) "
            "secret: it is missing, expired or revoked"
        )
    if status == 403:
        return ConfigError(f"{text}. Fix: grant the token or App contents and pull-requests write access")
    if status == 404:
        return NotFoundError(f"{text} (or the credential cannot see it)")
    missing = _missing_branch(data)
    if status == 422 and missing:
        # A PR from or into a branch that does not exist: GitHub says 422, the forge contract NotFound.
        return NotFoundError(f"{text}: the {missing} branch does not exist (push it before opening)")
    if status in (405, 409, 422):
        return ConflictError(text)
    return LeviathanError(text)


def _missing_branch(data: dict) -> str | None:
    """``head`` or ``base`` when a 422 says that branch of a pull request is invalid (not there)."""
    for error in data.get("errors") or []:
        if (
            isinstance(error, dict)
            and error.get("code") == "invalid"
            and error.get("field") in ("head", "base")
        ):
            return str(error["field"])
    return None


def _wait(policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], float]:
    backoff = tenacity.wait_exponential_jitter(
        multiplier=policy.initial_backoff, max=policy.max_backoff, jitter=policy.initial_backoff
    )
    secondary_hits = 0

    def wait(state: tenacity.RetryCallState) -> float:
        nonlocal secondary_hits
        exc = state.outcome.exception() if state.outcome else None
        asked = getattr(exc, "retry_after", None)
        if asked is not None:
            return max(asked, backoff(state))
        if getattr(exc, "secondary", False):
            # At least a minute, doubling while the limit persists; jitter only ever adds, so the
            # floor holds, and the ceiling bounds what one forge call can spend waiting.
            secondary_hits += 1
            base = min(policy.secondary_max_wait, policy.secondary_min_wait * 2 ** (secondary_hits - 1))
            return min(policy.secondary_max_wait, base * (1 + random.uniform(0, policy.secondary_jitter)))
        return backoff(state)

    return wait


def _retryable(policy: RetryPolicy) -> Callable[[BaseException], bool]:
    def retryable(exc: BaseException) -> bool:
        asked = getattr(exc, "retry_after", None)
        if getattr(exc, "secondary", False) and not policy.wait_out_secondary:
            return False
        return isinstance(exc, TransientError) and (asked is None or asked <= policy.max_wait)

    return retryable


def _sleep_budget_spent(policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], bool]:
    def spent(state: tenacity.RetryCallState) -> bool:
        # tenacity computes the next wait before asking whether to stop: upcoming_sleep is known here.
        limit = policy.max_total_sleep
        return limit is not None and state.idle_for + (state.upcoming_sleep or 0.0) > limit

    return spent


def call_github(
    fn: Callable[[], T], what: str, policy: RetryPolicy, secrets: Callable[[], Iterable[str | None]]
) -> T:
    """``fn()`` under the retry policy; every failure leaves as one of Leviathan's errors."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(_retryable(policy)),
        stop=tenacity.stop_after_attempt(policy.attempts) | _sleep_budget_spent(policy),
        wait=_wait(policy),
        sleep=policy.sleep,
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            try:
                return fn()
            except (GithubException, requests.RequestException) as exc:
                raise translate(exc, what, secrets(), policy.clock()) from None
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


# Push refusals that a retry cannot cure: each needs a person to change a permission, a ruleset or the
# change itself. Matched on GitHub's own words (the ref's "[remote rejected]" reason or the "remote:"
# lines of its pre-receive checks); anything else (5xx, a dropped connection, a lock) stays transient.
_PERMANENT_PUSH_REFUSALS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "the credential may not change workflow files (GitHub App: `workflows` permission; "
        "token: `workflow` scope)",
        re.compile(r"refusing to allow an? .{3,40} to create or update workflow"),
    ),
    (
        "secret scanning push protection found a secret in the change (GH009)",
        re.compile(r"\bGH009\b|push cannot contain secrets", re.IGNORECASE),
    ),
    (
        "a repository ruleset refuses the change (GH013)",
        re.compile(r"\bGH013\b|push declined due to repository rule violations"),
    ),
    (
        "branch protection refuses the update (GH006)",
        re.compile(r"\bGH006\b|protected branch hook declined"),
    ),
    (
        "the credential is not authorized for the organization's SAML single sign-on",
        re.compile(r"has enabled or enforced SAML SSO"),
    ),
    (
        "the credential may read but not write the repository",
        re.compile(r"Permission to \S+ denied to |Write access to repository not granted"),
    ),
)
_FORGE_LINE = re.compile(r"^(remote: .*\S.*|\s*! \[remote rejected\].*|fatal: .*returned error: \d+.*)$")


def permanent_push_refusal(git_output: str) -> str | None:
    """Why GitHub refused a push for good, with GitHub's own message; None when a retry may succeed."""
    for why, pattern in _PERMANENT_PUSH_REFUSALS:
        if pattern.search(git_output):
            said = [line.strip() for line in git_output.splitlines() if _FORGE_LINE.match(line.strip())]
            return f"{why}. GitHub said: " + " | ".join(dict.fromkeys(said) or [git_output.strip()])
    return None
