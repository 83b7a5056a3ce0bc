"""How an attempt can fail, in one table: what each failure type means for the task, for the run and
for the worker's exit code.

Everything else derives from this table: the type names (re-exported by ``attempts.py``),
``EXIT_CODES`` of the worker, whether the ledger counts a failure against ``max_attempts_per_task``
and the circuit breaker, and whether the attempt asset lets Dagster retry the op inside the same run.
A new way of failing is one new row here, never an ``if`` somewhere else.

- **counts against the task**: the task (or its generator, or its target's settings) is at fault;
  it spends one of ``max_attempts_per_task``, feeds escalation and the circuit breaker.
- **retried inside the run**: the platform is at fault and may recover within seconds (a network
  blip, a 5xx): Dagster's op retry policy runs the attempt again without waiting for the sensor.
  Such failures never count; instead ``Policy.infrastructure_streak_limit`` of them in a row hold the
  task (readiness ``infrastructure_streak``) so a permanent outage cannot loop forever.
"""

from __future__ import annotations

from dataclasses import dataclass

# The failure types by name (``attempts`` re-exports them: ``at.TIMEOUT``). Here, next to the table,
# so that a process that only needs the names (the worker) does not load the attempt ledger.
POLICY_VIOLATION = "policy_violation"
NO_CHANGES = "no_changes"
TESTS_FAILED = "tests_failed"
EXECUTOR_ERROR = "executor_error"
TIMEOUT = "timeout"
INFRASTRUCTURE = "infrastructure"
BUDGET_EXHAUSTED = "budget_exhausted"
# The forge refused the push for good (missing permission, ruleset, push protection).
PUSH_REJECTED = "push_rejected"
# The attempt's PR was closed without merge: the attempt succeeded, then a reviewer rejected its work.
PR_CLOSED = "pr_closed"
# The model provider refused the account (billing, permission, authentication): not the task's fault,
# and no later attempt can do better until an operator fixes it, so the target waits (readiness
# ``model_account``) until it is resumed.
MODEL_ACCOUNT = "model_account"


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
    FailureType(POLICY_VIOLATION, True, False, 3, "the actual diff leaves the allowed paths"),
    FailureType(NO_CHANGES, True, False, 4, "the generator changed nothing"),
    FailureType(TESTS_FAILED, True, False, 5, "the final test run failed"),
    FailureType(EXECUTOR_ERROR, True, False, 6, "the attempt cannot run as configured"),
    FailureType(TIMEOUT, True, False, 7, "attempt_timeout_seconds passed"),
    FailureType(INFRASTRUCTURE, False, True, 8, "network, forge 5xx, rate limit, lost worker"),
    FailureType(BUDGET_EXHAUSTED, True, False, 9, "the per-attempt model budget is spent"),
    FailureType(
        PUSH_REJECTED,
        True,
        False,
        10,
        "the forge refused the push for good (permissions, rulesets, push protection)",
    ),
    FailureType(
        MODEL_ACCOUNT,
        False,
        False,
        11,
        "the model provider refused the account (billing, permission, authentication): the target "
        "waits (readiness model_account) until an operator resumes it",
    ),
    FailureType(PR_CLOSED, True, False, None, "the attempt's PR was closed without merge"),
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
