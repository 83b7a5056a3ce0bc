"""How an attempt can fail, in one table: what each failure type means for the task, for the run and
for the worker's exit code.

Everything else derives from this table: the type names in ``attempts.py``, ``EXIT_CODES`` of the
worker, whether the ledger counts a failure against ``max_attempts_per_task`` and the circuit
breaker, and whether the attempt asset lets Dagster retry the op inside the same run. A new way of
failing is one new row here, never an ``if`` somewhere else.

- **counts against the task**: the task (or its generator, or its target's settings) is at fault;
  it spends one of ``max_attempts_per_task``, feeds escalation and the circuit breaker.
- **retried inside the run**: the platform is at fault and may recover within seconds (a network
  blip, a 5xx): Dagster's op retry policy runs the attempt again without waiting for the sensor.
  Such failures never count; instead ``Policy.infrastructure_streak_limit`` of them in a row hold the
  task (readiness ``infrastructure_streak``) so a permanent outage cannot loop forever.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FailureType:
    """One row of the failure table."""

    name: str
    counts_against_task: bool
    retried_inside_run: bool
    # What ``python -m worker`` exits with; None: recorded by the orchestrator, never by the worker.
    exit_code: int | None
    meaning: str


# The table. Exit codes 0 (success), 1 (crash before recording) and 2 (bad environment) are not
# failure types: see docs/worker.md.
TABLE: tuple[FailureType, ...] = (
    FailureType("policy_violation", True, False, 3, "the actual diff leaves the allowed paths"),
    FailureType("no_changes", True, False, 4, "the generator changed nothing"),
    FailureType("tests_failed", True, False, 5, "the final test run failed"),
    FailureType("executor_error", True, False, 6, "the attempt cannot run as configured"),
    FailureType("timeout", True, False, 7, "attempt_timeout_seconds passed"),
    FailureType("infrastructure", False, True, 8, "network, forge 5xx, rate limit, lost worker"),
    FailureType("budget_exhausted", True, False, 9, "the per-attempt model budget is spent"),
    FailureType(
        "push_rejected",
        True,
        False,
        10,
        "the forge refused the push for good (permissions, rulesets, push protection)",
    ),
    FailureType(
        "model_account",
        False,
        False,
        11,
        "the model provider refused the account (billing, permission, authentication): the target "
        "waits (readiness model_account) until an operator resumes it",
    ),
    FailureType("pr_closed", True, False, None, "the attempt's PR was closed without merge"),
)

BY_NAME: dict[str, FailureType] = {row.name: row for row in TABLE}
FAILURE_TYPES: tuple[str, ...] = tuple(BY_NAME)
EXIT_CODES: dict[str, int] = {row.name: row.exit_code for row in TABLE if row.exit_code is not None}


def counts_against_task(failure_type: str | None) -> bool:
    """Whether a failure of this type spends the task's attempts (an unknown type does: the safe side)."""
    row = BY_NAME.get(failure_type or "")
    return True if row is None else row.counts_against_task


def retried_inside_run(failure_type: str | None) -> bool:
    row = BY_NAME.get(failure_type or "")
    return bool(row and row.retried_inside_run)
