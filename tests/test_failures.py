"""The failure table is the one place a failure type's consequences are decided."""

from __future__ import annotations

from leviathan_dagster.core import attempts as at
from leviathan_dagster.core import failures
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


def test_only_infrastructure_is_free_and_retried_inside_the_run() -> None:
    free = [row.name for row in failures.TABLE if not row.counts_against_task]
    retried = [row.name for row in failures.TABLE if row.retried_inside_run]
    assert free == retried == ["infrastructure"]
    assert failures.counts_against_task("push_rejected")
    assert failures.counts_against_task("something_new")  # unknown: counted, the safe side


def test_the_ledger_counts_by_the_table() -> None:
    def record(failure_type: str) -> at.AttemptRecord:
        return at.AttemptRecord(
            "a", "t", "k", 1, at.FAILED, "2026-01-01T00:00:00Z", failure_type=failure_type
        )

    assert record(at.PUSH_REJECTED).counts_against_task
    assert not record(at.INFRASTRUCTURE).counts_against_task
