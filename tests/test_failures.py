"""The failure table is the one place a failure type's consequences are decided."""

from __future__ import annotations

from leviathan_dagster.core import failures
from leviathan_dagster.core.attempts import ledger as at
from worker import attempt as worker_attempt


def test_every_failure_type_constant_is_a_row_of_the_table() -> None:
    constants = {
        value
        for name, value in vars(at).items()
        if name.isupper() and isinstance(value, str) and value in failures.BY_NAME
    }
    assert constants == set(failures.FAILURE_TYPES) == set(at.FAILURE_TYPES)


def test_exit_codes_are_unique_and_the_workers_are_the_tables() -> None:
    codes = list(failures.EXIT_CODES.values())
    assert len(codes) == len(set(codes)) and not {0, 1, 2} & set(codes)
    assert worker_attempt.EXIT_CODES is failures.EXIT_CODES
    assert failures.EXIT_CODES["push_rejected"] == 10 and "pr_closed" not in failures.EXIT_CODES


def test_only_infrastructure_and_model_account_are_free_and_only_infrastructure_retried_in_the_run() -> None:
    free = [row.name for row in failures.TABLE if not row.counts_against_task]
    retried = [row.name for row in failures.TABLE if row.retried_inside_run]
    assert retried == ["infrastructure"]
    # A refused model account is not the task's fault either, but retrying in the run cannot help: the
    # target waits for an operator (readiness model_account).
    assert free == ["infrastructure", "model_account"]
    assert failures.counts_against_task("push_rejected")
    assert failures.counts_against_task("something_new")  # unknown: counted, the safe side


def test_the_ledger_counts_by_the_table() -> None:
    def record(failure_type: str) -> at.AttemptRecord:
        return at.AttemptRecord(
            "a", "t", "k", 1, at.FAILED, "2026-01-01T00:00:00Z", failure_type=failure_type
        )

    assert record(at.PUSH_REJECTED).counts_against_task
    assert not record(at.INFRASTRUCTURE).counts_against_task


def test_refused_pushes_open_the_circuit_breaker_and_infrastructure_does_not(tmp_path) -> None:
    from leviathan_dagster.core.attempts import lifecycle
    from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog

    log = NdjsonEventLog(tmp_path / "events.ndjson")
    for number, (task, failure) in enumerate(
        [("a", at.PUSH_REJECTED), ("b", at.INFRASTRUCTURE), ("c", at.PUSH_REJECTED)], start=1
    ):
        ids = {"target_id": "site", "task_id": task, "attempt_id": f"attempt-{number}"}
        log.append(
            [
                lifecycle.attempt_created(
                    **ids, attempt_number=1, branch_name="b", executor="local", actor_id="t"
                ),
                lifecycle.attempt_failed(failure_type=failure, error_summary="x", actor_id="t", **ids),
            ]
        )
    ledger = at.AttemptLedger.from_events(log.read())
    assert ledger.target("site").consecutive_failures == 2
    assert ledger.task("site", "a").counted_failures == 1 and ledger.task("site", "b").counted_failures == 0
