"""The attempt ledger folded from a real event log, and the orchestrator's side of running an attempt."""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from leviathan_dagster.core.attempts import ledger as at
from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.attempts.ledger import (
    AttemptLedger,
    AttemptRecord,
    branch_name_for,
    make_attempt_id,
)
from leviathan_dagster.core.attempts.runner import (
    ORCHESTRATOR,
    DuplicateAttempt,
    PlannedAttempt,
    apply_failure_consequences,
    execute_attempt,
    plan_next_attempt,
    reconcile_lost_attempts,
)
from leviathan_dagster.core.events import model as ev
from leviathan_dagster.core.events.model import Event, StoredEvent, format_timestamp
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.executors.base import AttemptSpec, ExecutionResult, Executor
from leviathan_dagster.core.generators.usage import CallUsage, UsageRecorder
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import Policy, TargetConfig

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TARGET = "site"


def stamp(seconds: float = 0) -> str:
    return format_timestamp(T0 + timedelta(seconds=seconds))


def make_target(**policy) -> TargetConfig:
    return TargetConfig(id=TARGET, repo_url="file:///repos/site.git", policy=Policy(**policy))


class Log:
    """A real NDJSON event log plus builders for one target's attempt events."""

    def __init__(self, path: Path) -> None:
        self.store = NdjsonEventLog(path)

    @staticmethod
    def ids(task_id: str, number: int, target_id: str = TARGET) -> dict[str, str]:
        attempt_id = make_attempt_id(target_id, task_id, number)
        return {"attempt_id": attempt_id, "target_id": target_id, "task_id": task_id, "actor_id": "worker"}

    def append(self, *events: Event) -> list[StoredEvent]:
        # The log refuses a known event_id with new content (ConflictError). A fact can still reach it
        # twice under two ids (two producers, a bundle re-sent with fresh ids), which is what the
        # ledger must tolerate: give such repeats a fresh id.
        return self.store.append([self._fresh_if_known(e) for e in events])

    def _fresh_if_known(self, event: Event) -> Event:
        if self.store.get(event.event_id) is None:
            return event
        return dataclasses.replace(event, event_id=str(uuid.uuid4()))

    def created(
        self, task_id: str, number: int, *, seconds: float = 0, run_id: str | None = None, **kw
    ) -> str:
        ids = self.ids(task_id, number, **kw)
        self.append(
            lifecycle.attempt_created(
                **ids,
                attempt_number=number,
                branch_name=branch_name_for(task_id, ids["attempt_id"]),
                executor="local",
                run_id=run_id,
                at=T0 + timedelta(seconds=seconds),
            )
        )
        return ids["attempt_id"]

    def started(self, task_id: str, number: int) -> None:
        self.append(lifecycle.attempt_started(**self.ids(task_id, number)))

    def succeeded(self, task_id: str, number: int, *, seconds: float = 0, **details) -> None:
        self.append(
            lifecycle.attempt_succeeded(**self.ids(task_id, number), completed_at=stamp(seconds), **details)
        )

    def failed(
        self, task_id: str, number: int, failure_type: str = at.TESTS_FAILED, *, seconds: float = 0
    ) -> None:
        self.append(
            lifecycle.attempt_failed(
                **self.ids(task_id, number),
                failure_type=failure_type,
                error_summary=f"{failure_type}: details",
                completed_at=stamp(seconds),
            )
        )

    def attempt(
        self, task_id: str, number: int, outcome: str = at.TESTS_FAILED, *, seconds: float = 0
    ) -> None:
        """A whole attempt: created, started, then succeeded (``outcome='succeeded'``) or failed that way."""
        self.created(task_id, number, seconds=seconds)
        self.started(task_id, number)
        if outcome == at.SUCCEEDED:
            self.succeeded(task_id, number, seconds=seconds + 1)
        else:
            self.failed(task_id, number, outcome, seconds=seconds + 1)

    def ledger(self) -> AttemptLedger:
        return AttemptLedger.from_events(self.store.read())

    def types(self, after_seq: int = 0) -> list[str]:
        return [stored.event_type for stored in self.store.read(after_seq)]

    def last(self, event_type: str) -> StoredEvent:
        return [stored for stored in self.store.read() if stored.event_type == event_type][-1]


@pytest.fixture
def log(tmp_path: Path) -> Log:
    return Log(tmp_path / "events.ndjson")


# -- ids and names -------------------------------------------------------------------------------------------


def test_attempt_id_is_deterministic_and_distinct() -> None:
    first = make_attempt_id("site", "t1", 1)
    assert first == make_attempt_id("site", "t1", 1)
    assert re.fullmatch(r"attempt-[0-9a-f]{12}", first)
    others = {
        make_attempt_id("site", "t1", 2),
        make_attempt_id("site", "t2", 1),
        make_attempt_id("api", "t1", 1),
    }
    assert len(others | {first}) == 4


def test_branch_name_and_task_key() -> None:
    attempt_id = make_attempt_id("site", "fix-links", 3)
    assert branch_name_for("fix-links", attempt_id) == f"agent/fix-links-{attempt_id}"
    assert at.task_key("site", "fix-links") == "site/fix-links"
    assert at.split_task_key(at.task_key("site", "fix-links")) == ("site", "fix-links")


# -- folding the log -----------------------------------------------------------------------------------------


def test_created_started_succeeded(log: Log) -> None:
    attempt_id = log.created("t1", 1, run_id="run-1")
    record = log.ledger().attempt(attempt_id)
    assert record == AttemptRecord(
        attempt_id=attempt_id,
        target_id=TARGET,
        task_id="t1",
        number=1,
        status=at.CREATED,
        created_at=stamp(),
        branch_name=f"agent/t1-{attempt_id}",
        run_id="run-1",
    )
    assert record.in_flight and record.counts_against_task

    log.started("t1", 1)
    running = log.ledger().attempt(attempt_id)
    assert running.status == at.RUNNING and running.started_at is not None and running.in_flight

    log.succeeded("t1", 1, seconds=30, commit_sha="abc123")
    done = log.ledger().attempt(attempt_id)
    assert (done.status, done.completed_at, done.commit_sha) == (at.SUCCEEDED, stamp(30), "abc123")
    assert done.ended_at == T0 + timedelta(seconds=30)
    assert not done.in_flight and done.counts_against_task
    assert done.branch_name == f"agent/t1-{attempt_id}" and done.run_id == "run-1"


def test_created_to_failed(log: Log) -> None:
    log.attempt("t1", 1, at.NO_CHANGES)
    record = log.ledger().task(TARGET, "t1").last
    assert (record.status, record.failure_type, record.error_summary) == (
        at.FAILED,
        at.NO_CHANGES,
        "no_changes: details",
    )
    assert record.completed_at == stamp(1)


def test_pr_created_sets_pr_fields_before_or_after_the_end(log: Log) -> None:
    for task_id, pr_number in (("before", 11), ("after", 12)):
        ids = log.ids(task_id, 1)
        log.created(task_id, 1)
        pr = lifecycle.pr_created(
            **ids, pr_number=pr_number, pr_url=f"https://forge/pull/{pr_number}", branch_name="agent/x"
        )
        if task_id == "before":
            log.append(pr)
            log.succeeded(task_id, 1)
        else:
            log.succeeded(task_id, 1)
            log.append(pr)
    ledger = log.ledger()
    for task_id, pr_number in (("before", 11), ("after", 12)):
        record = ledger.task(TARGET, task_id).last
        assert (record.status, record.pr_number, record.pr_url) == (
            at.SUCCEEDED,
            pr_number,
            f"https://forge/pull/{pr_number}",
        )


def test_replayed_created_event_is_ignored(log: Log) -> None:
    attempt_id = log.created("t1", 1, run_id="first-run")
    log.created("t1", 1, seconds=300, run_id="second-run")  # a producer retrying after a crash
    ledger = log.ledger()
    assert len(ledger.task(TARGET, "t1").attempts) == 1
    record = ledger.attempt(attempt_id)
    assert (record.run_id, record.created_at) == ("first-run", stamp())
    assert ledger.target(TARGET).last_attempt_at == stamp()
    assert ledger.task(TARGET, "t1").next_number == 2


def test_late_events_after_the_end_change_nothing(log: Log) -> None:
    log.attempt("ok", 1, at.SUCCEEDED)
    log.failed("ok", 1)
    log.started("ok", 1)
    log.attempt("bad", 1)
    log.failed("bad", 1)  # the same failure recorded twice must not count twice
    log.succeeded("bad", 1)
    log.started("bad", 1)
    ledger = log.ledger()
    assert ledger.task(TARGET, "ok").last.status == at.SUCCEEDED
    assert ledger.task(TARGET, "ok").last.failure_type is None
    assert ledger.task(TARGET, "bad").last.status == at.FAILED
    assert ledger.target(TARGET).consecutive_failures == 1
    assert ledger.task(TARGET, "bad").counted_failures == 1


def test_events_for_unknown_attempts_are_ignored(log: Log) -> None:
    log.started("ghost", 1)
    log.failed("ghost", 1)
    ledger = log.ledger()
    assert ledger.attempts() == []
    assert ledger.target(TARGET).consecutive_failures == 0
    assert ledger.last_seq == 2


def test_next_number_and_counts(log: Log) -> None:
    assert log.ledger().task(TARGET, "t1").next_number == 1
    log.attempt("t1", 1, at.SUCCEEDED)
    log.attempt("t1", 2, at.TESTS_FAILED)
    log.attempt("t1", 3, at.INFRASTRUCTURE)
    log.attempt("t1", 4, at.TIMEOUT)
    log.created("t1", 5)
    history = log.ledger().task(TARGET, "t1")
    assert history.next_number == 6
    assert history.counted_attempts == 4  # everything but the infrastructure failure, in-flight included
    assert history.counted_failures == 2  # tests_failed and timeout
    assert [a.number for a in history.attempts] == [1, 2, 3, 4, 5]
    assert history.in_flight().number == 5
    assert history.last.number == 5


def test_target_streak_and_last_attempt(log: Log) -> None:
    log.attempt("a", 1, seconds=0)
    log.attempt("b", 1, at.POLICY_VIOLATION, seconds=10)
    log.attempt("c", 1, at.INFRASTRUCTURE, seconds=20)  # neither breaks nor extends the streak
    ledger = log.ledger()
    assert ledger.target(TARGET).consecutive_failures == 2
    assert ledger.target(TARGET).last_attempt_at == stamp(20)

    log.attempt("d", 1, at.SUCCEEDED, seconds=30)
    log.attempt("e", 1, seconds=40)
    ledger = log.ledger()
    assert ledger.target(TARGET).consecutive_failures == 1
    assert ledger.target(TARGET).last_attempt_at == stamp(40)
    assert ledger.target("other") == at.TargetHistory()


def test_targets_are_kept_apart(log: Log) -> None:
    log.attempt("a", 1)
    log.created("a", 1, target_id="other")
    ledger = log.ledger()
    assert [a.target_id for a in ledger.attempts("other")] == ["other"]
    assert [a.task_id for a in ledger.running("other")] == ["a"]
    assert ledger.running(TARGET) == []
    assert len(ledger.attempts()) == 2
    assert ledger.target("other").consecutive_failures == 0


def test_circuit_opened_then_reset(log: Log) -> None:
    log.attempt("a", 1)
    log.attempt("b", 1)
    log.append(lifecycle.circuit_opened(target_id=TARGET, consecutive_failures=2, threshold=2, actor_id="o"))
    opened = log.ledger().target(TARGET)
    assert (opened.circuit_opened, opened.consecutive_failures) == (True, 2)

    log.append(Event.new("circuit.reset", {"target_id": TARGET}, actor_id="operator"))
    reset = log.ledger().target(TARGET)
    assert (reset.circuit_opened, reset.consecutive_failures) == (False, 0)


def test_task_level_events(log: Log) -> None:
    log.attempt("t1", 1)
    ids = {"target_id": TARGET, "task_id": "t1", "actor_id": "o"}
    log.append(
        lifecycle.retry_scheduled(**ids, retry_number=2, backoff_seconds=60, scheduled_at=T0),
        lifecycle.task_escalated(**ids, failures=1),
        lifecycle.task_completed(**ids, status="failed"),
    )
    history = log.ledger().task(TARGET, "t1")
    assert (history.retries_scheduled, history.escalated, history.completed) == ({2}, True, True)


def test_ledger_survives_a_restart(log: Log, tmp_path: Path) -> None:
    log.attempt("a", 1, at.SUCCEEDED)
    log.attempt("b", 1)
    log.created("c", 1)
    before = log.ledger()
    after = AttemptLedger.from_events(NdjsonEventLog(tmp_path / "events.ndjson").read())
    assert after.attempts() == before.attempts()
    assert after.target(TARGET) == before.target(TARGET)
    assert after.last_seq == before.last_seq == 7


def test_apply_continues_from_last_seq(log: Log) -> None:
    log.attempt("a", 1)
    ledger = log.ledger()
    log.attempt("b", 1, at.SUCCEEDED)
    ledger.apply(log.store.read(after_seq=ledger.last_seq))
    assert ledger.attempts() == log.ledger().attempts()
    assert ledger.last_seq == 6


# -- the orchestrator: execute_attempt -----------------------------------------------------------------------


class FakeExecutor(Executor):
    """Simulates the worker: writes the events a real worker would, or none, or dies."""

    name = "fake"

    def __init__(self, events: NdjsonEventLog, *, outcome: str | None = "succeeded", result=None, error=None):
        self.events, self.outcome, self.error = events, outcome, error
        self.result = result or ExecutionResult(0, False, "worker done")
        self.specs: list[AttemptSpec] = []
        self.cleaned: list[str] = []

    def run(self, spec: AttemptSpec) -> ExecutionResult:
        self.specs.append(spec)
        ids = {"attempt_id": spec.attempt_id, "target_id": spec.target.id, "task_id": spec.task_id}
        if self.outcome is not None:
            self.events.append([lifecycle.attempt_started(**ids, actor_id="worker")])
        if self.outcome == "succeeded":
            branch = branch_name_for(spec.task_id, spec.attempt_id)
            pr = lifecycle.pr_created(
                **ids, pr_number=4, pr_url="https://forge/pull/4", branch_name=branch, actor_id="w"
            )
            self.events.append(
                [pr, lifecycle.attempt_succeeded(**ids, actor_id="worker", commit_sha="c0ffee")]
            )
        elif self.outcome is not None and self.outcome != "started":
            failed = lifecycle.attempt_failed(
                **ids, failure_type=self.outcome, error_summary="tests red", actor_id="w"
            )
            self.events.append([failed])
        if self.error is not None:
            raise self.error
        return self.result

    def cleanup(self, attempt_id: str) -> None:
        self.cleaned.append(attempt_id)


def run(log: Log, tmp_path: Path, executor: FakeExecutor, *, task_id: str = "t1", **policy) -> AttemptRecord:
    target = make_target(**policy)
    planned = plan_next_attempt(target, task_id, log.ledger())
    home = LeviathanHome(tmp_path / "home")
    return execute_attempt(planned, home, tmp_path / "leviathan.yaml", executor, log.store, run_id="run-42")


def test_execute_attempt_records_the_worker_success(log: Log, tmp_path: Path) -> None:
    executor = FakeExecutor(log.store)
    record = run(log, tmp_path, executor)

    attempt_id = make_attempt_id(TARGET, "t1", 1)
    created = next(iter(log.store.read()))
    assert created.event_type == ev.ATTEMPT_CREATED and created.event.actor_id == ORCHESTRATOR
    assert created.payload | {"created_at": None} == {
        "attempt_id": attempt_id,
        "node_id": attempt_id,
        "node_type": "Attempt",
        "task_id": "t1",
        "target_id": TARGET,
        "attempt_number": 1,
        "status": "created",
        "created_at": None,
        "branch_name": f"agent/t1-{attempt_id}",
        "executor": "fake",
        "run_id": "run-42",
    }
    assert log.types() == [ev.ATTEMPT_CREATED, ev.ATTEMPT_STARTED, ev.PR_CREATED, ev.ATTEMPT_SUCCEEDED]
    assert (record.status, record.pr_number, record.commit_sha, record.run_id) == (
        at.SUCCEEDED,
        4,
        "c0ffee",
        "run-42",
    )
    [spec] = executor.specs
    assert (spec.attempt_id, spec.attempt_number, spec.task_id) == (attempt_id, 1, "t1")
    assert executor.cleaned == [attempt_id]


def test_worker_failure_schedules_a_retry(log: Log, tmp_path: Path) -> None:
    record = run(log, tmp_path, FakeExecutor(log.store, outcome=at.TESTS_FAILED), backoff_seconds=120)
    assert (record.status, record.failure_type, record.error_summary) == (
        at.FAILED,
        at.TESTS_FAILED,
        "tests red",
    )
    assert log.types()[-2:] == [ev.ATTEMPT_FAILED, ev.RETRY_SCHEDULED]
    retry = log.last(ev.RETRY_SCHEDULED).payload
    assert retry["retry_number"] == 2
    assert retry["scheduled_at"] == format_timestamp(record.ended_at + timedelta(seconds=120))


@pytest.mark.parametrize("outcome", [None, "started"])
def test_worker_that_records_no_result_is_failed_as_infrastructure(
    log: Log, tmp_path: Path, outcome: str | None
) -> None:
    executor = FakeExecutor(
        log.store, outcome=outcome, result=ExecutionResult(137, False, "x" * 600 + "OOMKilled")
    )
    record = run(log, tmp_path, executor)
    assert (record.status, record.failure_type) == (at.FAILED, at.INFRASTRUCTURE)
    assert record.error_summary.startswith("worker ended (exit 137) without recording a result: ")
    assert record.error_summary.endswith("OOMKilled")
    assert len(record.error_summary) < 600  # only the tail of the log
    failed = log.last(ev.ATTEMPT_FAILED)
    assert failed.event.actor_id == ORCHESTRATOR and failed.payload["attempt_number"] == 1
    # The platform's fault: a retry, and the task keeps all its attempts.
    assert log.types()[-1] == ev.RETRY_SCHEDULED
    history = log.ledger().task(TARGET, "t1")
    assert (history.counted_attempts, history.in_flight()) == (0, None)


def test_timed_out_worker_fails_with_timeout(log: Log, tmp_path: Path) -> None:
    executor = FakeExecutor(log.store, outcome="started", result=ExecutionResult(None, True, "still working"))
    record = run(log, tmp_path, executor, attempt_timeout_seconds=300)
    assert (record.status, record.failure_type) == (at.FAILED, at.TIMEOUT)
    assert record.error_summary == "worker killed after attempt_timeout_seconds=300"
    assert log.ledger().task(TARGET, "t1").counted_failures == 1


class SpendsThenHangs(FakeExecutor):
    """A model attempt killed at its timeout after two calls: its usage.json is all that says so."""

    def run(self, spec: AttemptSpec) -> ExecutionResult:
        usage = UsageRecorder(spec.home.artifacts_dir(spec.attempt_id) / "usage.json")
        usage.for_generator("claude")
        for n in range(2):
            call = CallUsage("claude-sonnet-4-6", 1000, 200, 0, 0, 1.0, "tool_use", f"{n:064d}")
            usage.record(call, usd=0.006)
        return super().run(spec)


def test_timed_out_worker_keeps_what_it_spent(log: Log, tmp_path: Path) -> None:
    executor = SpendsThenHangs(log.store, outcome="started", result=ExecutionResult(None, True, "killed"))
    record = run(log, tmp_path, executor)
    assert (record.status, record.failure_type) == (at.FAILED, at.TIMEOUT)
    usage = log.last(ev.ATTEMPT_FAILED).payload["usage"]
    assert (usage["generator"], usage["calls"], usage["input_tokens"], usage["usd"]) == (
        "claude",
        2,
        2000,
        0.012,
    )
    assert "per_call" not in usage  # the per-call rows stay in the artifact
    assert record.usage == usage


def test_executor_that_raises_leaves_a_consistent_record(log: Log, tmp_path: Path) -> None:
    executor = FakeExecutor(log.store, outcome=None, error=RuntimeError("pod quota exceeded"))
    record = run(log, tmp_path, executor)
    assert (record.status, record.failure_type) == (at.FAILED, at.INFRASTRUCTURE)
    assert "executor fake failed: RuntimeError: pod quota exceeded" in record.error_summary
    assert executor.cleaned == [record.attempt_id]
    ledger = log.ledger()
    assert ledger.running(TARGET) == []
    assert ledger.attempt(record.attempt_id) == record
    assert log.store.verify().ok


def test_executor_raising_after_the_worker_finished_keeps_the_worker_result(log: Log, tmp_path: Path) -> None:
    executor = FakeExecutor(log.store, outcome="succeeded", error=OSError("log stream closed"))
    record = run(log, tmp_path, executor)
    assert record.status == at.SUCCEEDED
    assert log.types().count(ev.ATTEMPT_FAILED) == 0


def test_second_execute_of_the_same_attempt_is_refused(log: Log, tmp_path: Path) -> None:
    target = make_target()
    planned = plan_next_attempt(target, "t1", log.ledger())
    home, config = LeviathanHome(tmp_path / "home"), tmp_path / "leviathan.yaml"
    execute_attempt(planned, home, config, FakeExecutor(log.store), log.store)
    events_before = log.store.head()

    again = FakeExecutor(log.store)
    with pytest.raises(DuplicateAttempt, match=rf"attempt {planned.attempt_id} \(t1 #1\) exists"):
        execute_attempt(PlannedAttempt(target, "t1", 1), home, config, again, log.store)
    assert again.specs == [] and again.cleaned == []
    assert log.store.head() == events_before
    assert plan_next_attempt(target, "t1", log.ledger()).attempt_number == 2


# -- the orchestrator: consequences of a failure -------------------------------------------------------------


def consequences(
    log: Log, task_id: str, number: int, failure_type: str = at.TESTS_FAILED, **policy
) -> list[str]:
    """Record a failed attempt, apply its consequences; the event types appended by them."""
    log.attempt(task_id, number, failure_type, seconds=number * 100)
    ledger = log.ledger()
    record = ledger.task(TARGET, task_id).last
    apply_failure_consequences(record, make_target(**policy), ledger, log.store)
    return log.types(after_seq=ledger.last_seq)


def test_retry_scheduled_while_attempts_remain(log: Log) -> None:
    policy = {"max_attempts_per_task": 3, "backoff_seconds": 45, "circuit_breaker_failures": 10}
    assert consequences(log, "t1", 1, **policy) == [ev.RETRY_SCHEDULED]
    assert consequences(log, "t1", 2, **policy) == [ev.RETRY_SCHEDULED]
    retry = log.last(ev.RETRY_SCHEDULED)
    assert retry.payload == {
        "task_id": "t1",
        "target_id": TARGET,
        "retry_number": 3,
        "backoff_seconds": 45,
        "scheduled_at": stamp(201 + 45),  # the second failure ended at 201 s
    }
    assert log.ledger().task(TARGET, "t1").retries_scheduled == {2, 3}


def test_exhausted_task_completes_as_failed_once(log: Log) -> None:
    policy = {"max_attempts_per_task": 2, "circuit_breaker_failures": 10}
    assert consequences(log, "t1", 1, **policy) == [ev.RETRY_SCHEDULED]
    assert consequences(log, "t1", 2, **policy) == [ev.TASK_COMPLETED]
    completed = log.last(ev.TASK_COMPLETED).payload
    assert (completed["status"], completed["reason"]) == ("failed", "2 attempts used (max_attempts_per_task)")
    assert log.ledger().task(TARGET, "t1").completed

    ledger = log.ledger()
    apply_failure_consequences(ledger.task(TARGET, "t1").last, make_target(**policy), ledger, log.store)
    assert log.types().count(ev.TASK_COMPLETED) == 1


def test_escalation_at_escalation_after(log: Log) -> None:
    policy = {"max_attempts_per_task": 5, "escalation_after": 2, "circuit_breaker_failures": 10}
    assert ev.TASK_ESCALATED not in consequences(log, "t1", 1, **policy)
    assert ev.TASK_ESCALATED not in consequences(log, "t1", 2, at.INFRASTRUCTURE, **policy)
    assert ev.TASK_ESCALATED in consequences(log, "t1", 3, **policy)
    assert log.last(ev.TASK_ESCALATED).payload == {"target_id": TARGET, "task_id": "t1", "failures": 2}
    assert ev.TASK_ESCALATED not in consequences(log, "t1", 4, **policy)
    assert log.ledger().task(TARGET, "t1").escalated


def test_no_escalation_without_escalation_after(log: Log) -> None:
    for number in (1, 2, 3):
        assert ev.TASK_ESCALATED not in consequences(log, "t1", number, max_attempts_per_task=9)


def test_circuit_opens_once(log: Log) -> None:
    policy = {"circuit_breaker_failures": 2, "max_attempts_per_task": 5}
    assert ev.CIRCUIT_OPENED not in consequences(log, "a", 1, **policy)
    assert ev.CIRCUIT_OPENED not in consequences(log, "b", 1, at.INFRASTRUCTURE, **policy)
    assert ev.CIRCUIT_OPENED in consequences(log, "c", 1, **policy)
    assert log.last(ev.CIRCUIT_OPENED).payload == {
        "target_id": TARGET,
        "consecutive_failures": 2,
        "threshold": 2,
    }
    assert ev.CIRCUIT_OPENED not in consequences(log, "d", 1, **policy)
    assert log.types().count(ev.CIRCUIT_OPENED) == 1

    log.append(Event.new("circuit.reset", {"target_id": TARGET}, actor_id="operator"))
    assert ev.CIRCUIT_OPENED not in consequences(log, "e", 1, **policy)
    assert ev.CIRCUIT_OPENED in consequences(log, "f", 1, **policy)  # a new opening after the reset


def test_success_has_no_consequences(log: Log) -> None:
    log.attempt("t1", 1, at.SUCCEEDED)
    ledger = log.ledger()
    apply_failure_consequences(ledger.task(TARGET, "t1").last, make_target(), ledger, log.store)
    assert log.store.head()[0] == ledger.last_seq


# -- reconciling attempts whose run died ---------------------------------------------------------------------


def test_reconcile_fails_in_flight_attempts_of_dead_runs(log: Log) -> None:
    lost = log.created("lost", 1, run_id="run-dead")
    log.created("alive", 1, run_id="run-alive")
    log.started("alive", 1)
    log.created("no-run", 1)
    log.created("done", 1, run_id="run-finished")
    log.succeeded("done", 1)
    ledger = log.ledger()

    failed = reconcile_lost_attempts(ledger, lambda run_id: run_id == "run-alive", log.store)
    assert [a.attempt_id for a in failed] == [lost]
    assert log.types(after_seq=ledger.last_seq) == [ev.ATTEMPT_FAILED]

    after = log.ledger()
    record = after.attempt(lost)
    assert (record.status, record.failure_type) == (at.FAILED, at.INFRASTRUCTURE)
    assert record.error_summary == "run run-dead ended without recording this attempt's result"
    assert {a.task_id: a.status for a in after.attempts()} == {
        "lost": at.FAILED,
        "alive": at.RUNNING,
        "no-run": at.CREATED,
        "done": at.SUCCEEDED,
    }
    assert after.task(TARGET, "lost").counted_attempts == 0

    assert reconcile_lost_attempts(after, lambda run_id: False, log.store) == [
        after.attempt(make_attempt_id(TARGET, "alive", 1))
    ]


def test_reconcile_with_every_run_alive_writes_nothing(log: Log) -> None:
    log.created("t1", 1, run_id="run-1")
    ledger = log.ledger()
    assert reconcile_lost_attempts(ledger, lambda run_id: True, log.store) == []
    assert log.store.head()[0] == ledger.last_seq
