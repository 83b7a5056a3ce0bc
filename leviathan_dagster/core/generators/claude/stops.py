"""Every way the Claude tool-use loop ends is one of these; the attempt's outcome is named after it.

``failure_type`` None means the change may go on to the worker's policy check, tests and PR. The loop
attaches its final record (turns, repair rounds, files, tests, token totals) to whichever stop ends it.
"""

from __future__ import annotations

from leviathan_dagster.core.attempts import ledger as at
from leviathan_dagster.core.generators.base import GenerationStopped


class AgentStop(GenerationStopped):
    failure_type: str | None = None

    def __init__(self, summary: str) -> None:
        super().__init__(type(self).failure_type or "", summary)
        self.failure_type = type(self).failure_type


class Done(AgentStop):
    """The model finished its change and the target has no test command."""


class TestsPassed(AgentStop):
    """The model finished and the harness's run of the test command passed."""

    __test__ = False


class TestsFailed(AgentStop):
    """Still failing after ``max_repair_rounds`` rounds of feeding the failures back."""

    __test__ = False
    failure_type = at.TESTS_FAILED


class NoChanges(AgentStop):
    """The model ended without editing anything: never a green run."""

    failure_type = at.NO_CHANGES


class ScopeViolation(AgentStop):
    """The model kept trying to write outside its scope after being told each time it may not."""

    failure_type = at.POLICY_VIOLATION


class BudgetExhausted(AgentStop):
    """The next call could exceed the attempt's token (or USD) budget: stopped before it."""

    failure_type = at.BUDGET_EXHAUSTED


class TurnLimit(AgentStop):
    """The model used every turn it had; turns are a budget like tokens."""

    failure_type = at.BUDGET_EXHAUSTED


class OutOfTime(AgentStop):
    """The attempt's wall-clock limit (``attempt_timeout_seconds``) is reached."""

    failure_type = at.TIMEOUT


class Refused(AgentStop):
    """The model refused the task (stop_reason ``refusal``)."""

    failure_type = at.EXECUTOR_ERROR


class Truncated(AgentStop):
    """Every reply was cut by ``max_tokens`` and the budget or the ceiling allows no more room."""

    failure_type = at.BUDGET_EXHAUSTED


class ContextFull(AgentStop):
    """The conversation no longer fits the model's context window, even with old tool results cleared."""

    failure_type = at.BUDGET_EXHAUSTED


class AccountRefused(AgentStop):
    """The API refused the account (authentication, billing, permission, spend limit): the target
    pauses with readiness ``model_account``; the task is not to blame."""

    failure_type = at.MODEL_ACCOUNT
