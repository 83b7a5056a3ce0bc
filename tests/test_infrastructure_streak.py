"""Infrastructure failures never count, yet they cannot loop forever: after
``infrastructure_streak_limit`` in a row the task waits (``infrastructure_streak``) with the reason an
operator reads, until the operator's run-now starts a new streak."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from test_operator_core import T0, fail, run_now, succeed, target, task

from leviathan_dagster.core.attempts import operator as op
from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.config.project import parse_project_config
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.models import Backlog
from leviathan_dagster.core.scheduling import readiness as rd

LATER = T0 + timedelta(days=1)  # after every backoff


@pytest.fixture
def log(tmp_path: Path) -> NdjsonEventLog:
    return NdjsonEventLog(tmp_path / "events.ndjson")


def infra(log: NdjsonEventLog, number: int, summary: str = "push of agent/a failed: 502") -> None:
    fail(
        log, "a", number, T0 + timedelta(minutes=number), failure_type="infrastructure", error_summary=summary
    )


def readiness(log: NdjsonEventLog, **policy) -> rd.Readiness:
    ledger = AttemptLedger.from_events(log.read())
    tgt = target(circuit_breaker_failures=99, **policy)
    return rd.evaluate_target(tgt, Backlog("b", (task("a"),)), ledger, [], LATER)[0]


def test_the_limit_holds_the_task_and_says_why(log) -> None:
    for number in range(1, 5):
        infra(log, number)
    assert readiness(log).ready  # 4 of 5: still retried
    infra(log, 5, summary="worker ended (exit 1) without recording a result: Read-only file system")
    held = readiness(log)
    assert (held.ready, held.reason) == (False, rd.INFRASTRUCTURE_STREAK)
    assert held.detail.startswith("5 infrastructure failures in a row (infrastructure_streak_limit 5)")
    assert "Read-only file system" in held.detail and "run_task_now_job" in held.detail
    assert readiness(log, infrastructure_streak_limit=6).ready


def test_a_counted_end_breaks_the_streak(log) -> None:
    infra(log, 1)
    infra(log, 2)
    fail(log, "a", 3, T0 + timedelta(minutes=3))  # tests_failed: counted, ends the streak
    infra(log, 4)
    assert readiness(log, infrastructure_streak_limit=2, max_attempts_per_task=9).ready
    succeed(log, "a", 5, 1, T0 + timedelta(minutes=5))
    infra(log, 6)
    assert AttemptLedger.from_events(log.read()).task("site", "a").infrastructure_streak[0].number == 6


def test_the_operators_run_now_releases_the_task_and_starts_a_new_streak(log) -> None:
    for number in (1, 2):
        infra(log, number)
    assert readiness(log, infrastructure_streak_limit=2).reason == rd.INFRASTRUCTURE_STREAK
    tgt = target(infrastructure_streak_limit=2, circuit_breaker_failures=99)
    allowed = run_now(log, [task("a")], "a", now=LATER, tgt=tgt)
    assert (allowed.ready, allowed.next_attempt_number) == (True, 3)
    log.append(
        [
            op.operator_event(
                op.RUN_NOW_REQUESTED, "alice", target_id="site", task_id="a", attempt_number=3, run_id="r"
            )
        ]
    )
    assert readiness(log, infrastructure_streak_limit=2).ready  # the sensor may retry it too now
    infra(log, 3)
    assert readiness(log, infrastructure_streak_limit=2).ready  # one of a new streak
    infra(log, 4)
    assert readiness(log, infrastructure_streak_limit=2).reason == rd.INFRASTRUCTURE_STREAK


def test_the_limit_is_a_policy_key(tmp_path) -> None:
    text = "targets:\n  - id: t\n    repo_url: ./t.git\n    policy:\n      infrastructure_streak_limit: 3\n"
    [parsed] = parse_project_config(text, "leviathan.yaml", base_dir=tmp_path).targets
    assert parsed.policy.infrastructure_streak_limit == 3


def test_attempts_an_operator_cancelled_do_not_build_a_streak(log) -> None:
    for number in (1, 2):
        infra(log, number)
        log.append(
            [
                op.operator_event(
                    op.CANCEL_REQUESTED, "alice", attempt_id=f"a-a-{number}", target_id="site", task_id="a"
                )
            ]
        )
    assert readiness(log, infrastructure_streak_limit=2).ready
