"""A sensor tick's forge reads (backlogs, open PRs, the PR lifecycle) get a short retry budget.

The worker may wait a secondary rate limit out (a minute at least, then longer: github_errors.py), a
tick may not: it would hold the daemon's sensor loop, and every other target with it, for minutes,
while the next tick comes anyway. Inside ``tick_reads()`` a GitHub forge retries a 5xx or a dropped
connection twice, quickly (``github_errors.TICK_RETRY``), and gives up at once on a secondary limit
or any wait GitHub asks for beyond a few seconds: that target is skipped this tick with one log line
(``skipped_this_tick``) and read again at the next; the other targets proceed.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

_IN_TICK = contextvars.ContextVar("leviathan_forge_tick_reads", default=False)


@contextmanager
def tick_reads() -> Iterator[None]:
    """Forges built inside (``forge_for``) serve a sensor tick: their GitHub calls get TICK_RETRY."""
    token = _IN_TICK.set(True)
    try:
        yield
    finally:
        _IN_TICK.reset(token)


def in_tick() -> bool:
    """True inside ``tick_reads()``: a GitHub forge built now gets ``github_errors.TICK_RETRY``."""
    return _IN_TICK.get()


def skipped_this_tick(target_id: str, what: str, reason: object) -> str:
    """The one log line for a target whose read a tick gave up on (a TransientError)."""
    return f"target '{target_id}': {what} skipped this tick, read again next tick: {reason}"
