"""GitHub's rate limits, waited out as GitHub asks, on one fake clock (no test sleeps for real).

Secondary limits without ``Retry-After``: at least 60 s, then exponentially longer with jitter, never
above the ceiling. The primary limit: until ``X-RateLimit-Reset`` as the injected clock reads it.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from github_double import GithubDouble, secondary_rate_limit
from github_double.state import Pull
from test_github_forge import TOKEN_ENV, target_for

from leviathan_dagster.core.errors import TransientError
from leviathan_dagster.core.forge.github.errors import RetryPolicy
from leviathan_dagster.core.forge.github.forge import GithubForge

EPOCH = 1_900_000_000.0  # far from the real clock: a wait computed from time.time() would be absurd


class FakeClock:
    """The double's and the forge's "now"; sleeping advances it and is recorded."""

    def __init__(self) -> None:
        self.now = EPOCH
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gh(tmp_path: Path, clock: FakeClock):
    with GithubDouble(tmp_path / "github", clock=clock) as double:
        double.add_repo("acme", "site", {"README.md": "# site\n"})
        yield double


def forge_for(gh: GithubDouble, clock: FakeClock, **policy) -> GithubForge:
    token = "ghp_" + secrets.token_hex(18)
    gh.add_token(token)
    retry = RetryPolicy(**{"attempts": 5, "sleep": clock.sleep, "clock": clock, **policy})
    return GithubForge(
        target_for(gh), {TOKEN_ENV: token}, retry=retry, seconds_between_writes=0, seconds_between_requests=0
    )


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_limit_without_retry_after_waits_a_minute_then_longer(gh, clock, status) -> None:
    forge = forge_for(gh, clock)
    gh.faults.add(secondary_rate_limit("GET", r"/pulls$", times=3, status=status))
    assert forge.list_pull_requests() == []
    first, second, third = clock.sleeps
    assert 60 <= first <= 72 and 120 <= second <= 144 and 240 <= third <= 288  # +0-20 % jitter
    assert len({round(s, 3) for s in clock.sleeps}) == 3
    assert gh.count("GET", "/repos/acme/site/pulls") == 4


def test_secondary_waits_stop_at_the_ceiling_and_then_give_up(gh, clock) -> None:
    forge = forge_for(gh, clock, attempts=4, secondary_max_wait=100)
    gh.faults.add(secondary_rate_limit("GET", r"/pulls$", times=10))
    with pytest.raises(TransientError, match="secondary rate limit"):
        forge.list_pull_requests()
    assert clock.sleeps[0] >= 60 and clock.sleeps[1:] == [100, 100]


def test_secondary_limit_with_retry_after_waits_exactly_that(gh, clock) -> None:
    forge = forge_for(gh, clock)
    gh.faults.add(secondary_rate_limit("GET", r"/pulls$", retry_after=90))
    assert forge.list_pull_requests() == []
    assert clock.sleeps == [90]


def test_primary_limit_waits_until_the_reset_on_the_injected_clock(gh, clock) -> None:
    forge = forge_for(gh, clock, max_wait=900)
    gh.exhaust_rate_limit("leviathan-bot", reset_in=600)
    assert forge.list_pull_requests() == []
    assert len(clock.sleeps) == 1 and 600 <= clock.sleeps[0] <= 602  # X-RateLimit-Reset, +1 s


def test_primary_limit_beyond_max_wait_goes_up_as_transient(gh, clock) -> None:
    forge = forge_for(gh, clock, max_wait=120)
    gh.exhaust_rate_limit("leviathan-bot", reset_in=3000)
    with pytest.raises(TransientError, match="rate limit"):
        forge.list_pull_requests()
    assert clock.sleeps == []


def test_content_creation_beyond_80_a_minute_meets_the_doubles_own_secondary_limit(gh, clock) -> None:
    # Not an armed fault: the double counts writes per identity as GitHub does, and the forge's wait
    # (at least a minute) is what lets the 81st comment through.
    forge = forge_for(gh, clock)
    repo = gh.state.repos["acme/site"]
    repo.pulls[1] = Pull(1, 900, "A", "", "main", "main", False, "leviathan-bot", EPOCH, EPOCH)
    for n in range(80):
        forge._note(1, f"note {n}")
    assert clock.sleeps == []
    forge._note(1, "one too many")
    assert len(clock.sleeps) == 1 and clock.sleeps[0] >= 60
    assert len(repo.comments[1]) == 81
    assert ("POST", "/api/v3/repos/acme/site/issues/1/comments", 403) in gh.requests
