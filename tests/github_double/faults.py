"""Fault injection for the GitHub double, armed per test: N× 5xx, secondary rate limits (GitHub's
message, with or without Retry-After), stale list reads, slow responses (client timeouts) and
rejected pushes.

A rule matches a method and a path regex and fires ``times`` times. ``after=True`` performs the request
first and then answers with the fault: the nasty case where a write happened but the client never
learned it (a 502 from a proxy after GitHub created the PR).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you "
    "reach out to GitHub Support for help, please include the request ID 0400:3C9E:1D4E2B7:1E0C1A1:6762A0F1."
)
SECONDARY_RATE_LIMIT_DOCS = (
    "https://docs.github.com/free-pro-team@latest/rest/using-the-rest-api/rate-limits-for-the-rest-api"
    "#about-secondary-rate-limits"
)


@dataclass
class Fault:
    method: str
    path: re.Pattern
    times: int
    status: int | None = 502  # None: answer normally (a pure delay)
    after: bool = False
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "Bad Gateway"
    body: object | None = None  # answered instead of GitHub's error body (a stale read: 200 and [])
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.fired < self.times and self.method in (method, "*") and bool(self.path.search(path))


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []
        # Armed push refusals, one per rejected push: GitHub's remote lines and the ref's reason.
        self.push_rejections: list[dict] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._rules.append(fault)
        return fault

    def take(self, method: str, path: str) -> Fault | None:
        """The first armed rule for this request (counted as fired), if any."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.fired += 1
                    return rule
        return None

    def take_push_rejection(self) -> dict | None:
        with self._lock:
            return self.push_rejections.pop(0) if self.push_rejections else None

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self.push_rejections.clear()


def server_error(method: str, path: str, *, status: int = 502, times: int = 1, after: bool = False) -> Fault:
    return Fault(method, re.compile(path), times, status=status, after=after)


def secondary_rate_limit(
    method: str, path: str, *, retry_after: int | None = None, times: int = 1, status: int = 403
) -> Fault:
    """GitHub's secondary rate limit: 403 (or 429) with its message and, usually, no Retry-After; the
    primary limit's headers show quota left, so only the message tells it apart."""
    headers = {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4990", "X-RateLimit-Resource": "core"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = {"message": SECONDARY_RATE_LIMIT_MESSAGE, "documentation_url": SECONDARY_RATE_LIMIT_DOCS}
    return Fault(method, re.compile(path), times, status=status, headers=headers, body=body)


def stale_read(method: str, path: str, *, times: int = 1) -> Fault:
    """A list answered from a lagging replica: 200 and nothing in it (GitHub's lists are eventually
    consistent, so a PR just created may be missing from them for a moment)."""
    return Fault(method, re.compile(path), times, status=200, body=[])


def slow(method: str, path: str, *, seconds: float, times: int = 1) -> Fault:
    return Fault(method, re.compile(path), times, status=None, delay=seconds)
