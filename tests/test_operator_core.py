"""Operator actions in the core: run-now's policy check, pause/resume and circuit reset in readiness,
delivery metrics, attempt details and the event-log health check, over real event logs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.attempts import operator as op
from leviathan_dagster.core.attempts.details import attempt_details, diff_stat
from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.errors import NotFoundError, PolicyViolation
from leviathan_dagster.core.events.health import check_event_log
from leviathan_dagster.core.events.model import Event
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.events.proofs import create_checkpoint
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import Backlog, Policy, TargetConfig, Task
from leviathan_dagster.core.projections.metrics import compute_delivery_metrics, usage_tokens
from leviathan_dagster.core.scheduling.readiness import evaluate_target

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def task(task_id: str, **fields) -> Task:
    return Task(id=task_id, title=task_id, ready=True, allowed_paths=("docs/x.md",), **fields)


def target(**policy) -> TargetConfig:
    return TargetConfig(id="site", repo_url="file:///r.git", policy=Policy(**policy))


def fail(log: NdjsonEventLog, task_id: str, number: int, at: datetime, **extra) -> None:
    attempt_id = f"a-{task_id}-{number}"
    ids = {"attempt_id": attempt_id, "target_id": "site", "task_id": task_id}
    log.append(
        [
            lifecycle.attempt_created(
                **ids, attempt_number=number, branch_name="b", executor="local", actor_id="t", at=at
            ),
            Event.new(
                "attempt.failed",
                {**ids, "failure_type": "tests_failed", "error_summary": "x", **extra},
                actor_id="t",
                at=at + timedelta(seconds=5),
            ),
        ]
    )


def succeed(log: NdjsonEventLog, task_id: str, number: int, pr: int, at: datetime, **extra) -> None:
    attempt_id = f"a-{task_id}-{number}"
    ids = {"attempt_id": attempt_id, "target_id": "site", "task_id": task_id}
    log.append(
        [
            lifecycle.attempt_created(
                **ids, attempt_number=number, branch_name="b", executor="local", actor_id="t", at=at
            ),
            Event.new("pr.created", {**ids, "pr_number": pr, "pr_url": "u"}, actor_id="t", at=at),
            Event.new("attempt.succeeded", {**ids, **extra}, actor_id="t", at=at + timedelta(seconds=9)),
        ]
    )


@pytest.fixture
def log(tmp_path: Path) -> NdjsonEventLog:
    return NdjsonEventLog(tmp_path / "events.ndjson")


def run_now(log, backlog_tasks, task_id, now=T0, **kw):
    ledger = AttemptLedger.from_events(log.read())
    defaults = {"max_concurrent": 4, "running_total": 0}
    return op.check_run_now(
        kw.pop("tgt", target()),
        Backlog("b", tuple(backlog_tasks)),
        ledger,
        [],
        now,
        task_id=task_id,
        **(defaults | kw),
    )


def test_run_now_skips_the_backoff_wait_only(log) -> None:
    fail(log, "a", 1, T0 - timedelta(seconds=10))
    backlog = [task("a")]
    scheduled = evaluate_target(
        target(backoff_seconds=600),
        Backlog("b", tuple(backlog)),
        AttemptLedger.from_events(log.read()),
        [],
        T0,
    )
    assert scheduled[0].reason == "backoff"
    result = run_now(log, backlog, "a", tgt=target(backoff_seconds=600))
    assert (result.ready, result.next_attempt_number) == (True, 2)


def test_run_now_keeps_every_guardrail(log) -> None:
    fail(log, "a", 1, T0 - timedelta(hours=1))
    fail(log, "a", 2, T0 - timedelta(hours=1))
    exhausted = run_now(
        log, [task("a")], "a", tgt=target(max_attempts_per_task=2, circuit_breaker_failures=9)
    )
    assert (exhausted.ready, exhausted.reason) == (False, "attempts_exhausted")
    with pytest.raises(PolicyViolation, match="cannot run now: attempts_exhausted"):
        op.require_run_now(exhausted)
    # A fresh task on the same target meets the open circuit breaker (2 consecutive failures).
    assert run_now(log, [task("a"), task("b")], "b").reason == "circuit_open"
    assert run_now(log, [task("c", status="completed")], "c").reason == "status"
    assert run_now(log, [task("d")], "d", running_total=4, tgt=target(circuit_breaker_failures=9)).reason == (
        "global_limit"
    )
    with pytest.raises(NotFoundError, match="no task 'zz'"):
        run_now(log, [task("a")], "zz")


def test_run_now_is_not_blocked_by_a_higher_priority_task_it_does_not_start(log) -> None:
    backlog = [task("urgent", priority=5), task("mine", priority=1)]
    assert evaluate_target(target(), Backlog("b", tuple(backlog)), AttemptLedger(), [], T0)[1].reason == (
        "max_open_prs"
    )
    assert run_now(log, backlog, "mine").ready


def test_pause_resume_and_circuit_reset_drive_readiness(log) -> None:
    backlog = Backlog("b", (task("a"),))
    log.append([op.operator_event(op.TARGET_PAUSED, "alice", target_id="site", reason="release freeze")])
    [r] = evaluate_target(target(), backlog, AttemptLedger.from_events(log.read()), [], T0)
    assert (r.reason, r.detail) == (
        "paused",
        "target 'site' paused by operator:alice: release freeze; resume it to continue",
    )
    assert log.get(list(log.read())[-1].event.event_id).event.actor_id == "operator:alice"
    log.append([op.operator_event(op.TARGET_RESUMED, None, target_id="site")])
    assert evaluate_target(target(), backlog, AttemptLedger.from_events(log.read()), [], T0)[0].ready
    fail(log, "x", 1, T0 - timedelta(hours=2))
    fail(log, "y", 1, T0 - timedelta(hours=2))
    assert evaluate_target(target(), backlog, AttemptLedger.from_events(log.read()), [], T0)[0].reason == (
        "circuit_open"
    )
    log.append([op.operator_event(op.CIRCUIT_RESET, "bob", target_id="site")])
    assert evaluate_target(target(), backlog, AttemptLedger.from_events(log.read()), [], T0)[0].ready


def test_attempt_to_cancel_needs_an_attempt_in_flight(log) -> None:
    with pytest.raises(NotFoundError, match="no attempt in flight"):
        op.attempt_to_cancel(AttemptLedger(), "site", "a")
    log.append(
        [
            lifecycle.attempt_created(
                target_id="site",
                task_id="a",
                attempt_id="a1",
                attempt_number=1,
                branch_name="b",
                executor="local",
                actor_id="t",
                run_id="r1",
            )
        ]
    )
    assert op.attempt_to_cancel(AttemptLedger.from_events(log.read()), "site", "a").run_id == "r1"


def test_delivery_metrics_per_day_and_target(log) -> None:
    day = T0.date()
    fail(log, "a", 1, T0, usage={"input_tokens": 100, "output_tokens": 20})
    succeed(log, "a", 2, 7, T0 + timedelta(minutes=5), usage={"input_tokens": 300, "output_tokens": 80})
    succeed(log, "b", 1, 8, T0 + timedelta(minutes=6))
    merged = T0 + timedelta(minutes=65)
    log.append(
        [
            Event.new(
                "pr.merged", {"target_id": "site", "pr_number": 7, "task": "site/a"}, actor_id="h", at=merged
            ),
            Event.new(
                "pr.closed", {"target_id": "site", "pr_number": 8, "task": "site/b"}, actor_id="h", at=merged
            ),
        ]
    )
    fail(log, "c", 1, T0 + timedelta(days=1))  # the next day: not counted
    [m] = compute_delivery_metrics(log.read(), day).values()
    assert (m.attempts, m.succeeded, m.failed, m.success_rate) == (3, 2, 1, 0.6667)
    assert m.failures_by_type == {"tests_failed": 1}
    assert (m.prs_opened, m.prs_merged, m.prs_closed) == (2, 1, 1)
    assert m.median_time_to_merge_seconds == 3600.0
    assert m.attempts_per_merged_pr == 2
    assert m.tokens_per_merged_pr == 500 and m.tokens == 500
    next_day = compute_delivery_metrics(log.read(), day + timedelta(days=1))["site"]
    assert (next_day.attempts, next_day.prs_merged, next_day.tokens_per_merged_pr) == (1, 0, None)
    assert compute_delivery_metrics(log.read(), date(2024, 1, 1)) == {}


def test_usage_tokens() -> None:
    assert usage_tokens({"usage": {"total_tokens": 9, "input_tokens": 4}}) == 9
    assert usage_tokens({"usage": {"input_tokens": 4, "cache_read_input_tokens": 2, "model": "m"}}) == 6
    assert usage_tokens({}) is None


def test_attempt_details_from_terminal_event_and_diff(log, tmp_path: Path) -> None:
    home = LeviathanHome(tmp_path / "home")
    succeed(log, "a", 1, 3, T0, touched_paths=["docs/a.md"], duration_seconds=1.5, usage={"total_tokens": 42})
    patch = home.artifacts_dir("a-a-1") / "diff.patch"
    patch.parent.mkdir(parents=True)
    patch.write_text(
        "diff --git a/docs/a.md b/docs/a.md\n--- a/docs/a.md\n+++ b/docs/a.md\n+one\n+two\n-old\n"
    )
    assert attempt_details(log.read(), home, "a-a-1") == {
        "touched_paths": ["docs/a.md"],
        "worker_duration_seconds": 1.5,
        "tokens": 42,
        "diff_stat": "1 files, +2 -1",
    }
    assert diff_stat("") == {"files": 0, "insertions": 0, "deletions": 0}


def test_event_log_health_chain_and_checkpoint(tmp_path: Path) -> None:
    home = LeviathanHome(tmp_path / "home")
    log = NdjsonEventLog(home.events_path)
    fail(log, "a", 1, T0)
    health = check_event_log(log, home)
    assert health.ok and "no checkpoint yet" in health.summary
    create_checkpoint(log, home)
    assert check_event_log(log, home).ok
    # Rewrite history: drop the last line. The chain of the prefix still verifies; the checkpoint does not.
    lines = home.events_path.read_bytes().splitlines(keepends=True)
    home.events_path.write_bytes(b"".join(lines[:-1]))
    broken = check_event_log(NdjsonEventLog(home.events_path), home)
    assert not broken.ok and "truncated" in broken.summary


def test_clear_escalation_gives_a_fresh_budget_and_keeps_the_history(log) -> None:
    policy = {"max_attempts_per_task": 2, "escalation_after": 2, "circuit_breaker_failures": 9}
    backlog = Backlog("b", (task("a"),))
    fail(log, "a", 1, T0 - timedelta(hours=1))
    fail(log, "a", 2, T0 - timedelta(seconds=30))  # its backoff (60 s) still runs at T0
    log.append([lifecycle.task_escalated(target_id="site", task_id="a", failures=2, actor_id="orchestrator")])
    [r] = evaluate_target(target(**policy), backlog, AttemptLedger.from_events(log.read()), [], T0)
    assert r.reason == "escalated" and "leviathan task clear-escalation site a" in r.detail

    event = op.clear_escalation_event(
        target(**policy), AttemptLedger.from_events(log.read()), "a", "ada", "criteria fixed"
    )
    assert event.actor_id == "operator:ada"
    assert event.payload == {
        "target_id": "site",
        "task_id": "a",
        "cleared": "escalated",
        "attempts_before": 2,
        "reason": "criteria fixed",
    }
    log.append([event])
    ledger = AttemptLedger.from_events(log.read())
    history = ledger.task("site", "a")
    # Reset: escalation, the counted budget, the backoff. Kept: the attempts and their numbering.
    assert (history.escalated, history.counted_attempts, history.counted_failures) == (False, 0, 0)
    assert [a.number for a in history.attempts] == [1, 2] and history.last is None
    [r] = evaluate_target(target(**policy), backlog, ledger, [], T0)
    assert (r.ready, r.next_attempt_number) == (True, 3)
    # Nothing to clear any more: a clear error, nothing recorded.
    with pytest.raises(NotFoundError, match="nothing to clear"):
        op.clear_escalation_event(target(**policy), ledger, "a", "ada")
    # A new failure counts from the fresh budget: one failure is not yet an escalation or exhaustion.
    fail(log, "a", 3, T0)
    history = AttemptLedger.from_events(log.read()).task("site", "a")
    assert (history.counted_attempts, history.counted_failures, history.last.number) == (1, 1, 3)


def test_clear_escalation_frees_an_exhausted_task_but_never_one_in_flight(log) -> None:
    policy = {"max_attempts_per_task": 1, "circuit_breaker_failures": 9}
    fail(log, "a", 1, T0 - timedelta(hours=1))
    ledger = AttemptLedger.from_events(log.read())
    [r] = evaluate_target(target(**policy), Backlog("b", (task("a"),)), ledger, [], T0)
    assert r.reason == "attempts_exhausted"
    assert op.clear_escalation_event(target(**policy), ledger, "a", "ada").payload["cleared"] == (
        "attempts_exhausted"
    )
    log.append(
        [
            lifecycle.attempt_created(
                target_id="site",
                task_id="b",
                attempt_id="b1",
                attempt_number=1,
                branch_name="x",
                executor="local",
                actor_id="t",
            )
        ]
    )
    with pytest.raises(PolicyViolation, match="attempt 1 \\(b1\\) is created"):
        op.clear_escalation_event(target(**policy), AttemptLedger.from_events(log.read()), "b", "ada")
