"""What a worker did but could not record, recovered before its attempt is declared lost.

A worker can open its PR and then die, or lose its database, before ``pr.created`` and
``attempt.succeeded`` are in the log. Declaring such an attempt lost (``infrastructure``) leaves an
open PR the log never saw, a retry that opens a second one, and a later merge that completes a task
for a PR nobody recorded. So before that verdict the orchestrator asks, in this order:

1. the forge: a PR whose head is the attempt's branch and whose body carries the task's marker is
   the attempt's PR; ``pr.created`` and ``attempt.succeeded`` are recorded from what the forge shows
   (the forge, not the worker, is the authority on whether a PR exists: never a fake green);
2. the worker's ``result.json`` (in the attempt's artifacts): a failure it recorded there is replayed
   with its failure type, when that is one Leviathan knows (the file is the worker's, so it is not
   trusted further than that; a claimed success without a PR on the forge is not believed).

Either way, and when the attempt is recorded lost, the worker's ``usage.json`` (rewritten after every
model call) goes into the terminal event as its ``usage``: a worker killed mid-attempt (a timeout)
has still spent what it spent, and the cost view must count it.

Event ids are the ones the worker would have used (see ``lifecycle``), so a late append by the worker
itself is a replay, never a second fact.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from leviathan_dagster.core.attempts import ledger as at
from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.attempts.markers import parse_task_marker
from leviathan_dagster.core.errors import LeviathanError
from leviathan_dagster.core.events.model import Event
from leviathan_dagster.core.forge.base import Forge
from leviathan_dagster.core.home import LeviathanHome

RESULT_FILE = "result.json"
USAGE_FILE = "usage.json"
ORCHESTRATOR = "leviathan-orchestrator"
KNOWN_FAILURES = frozenset(
    {at.POLICY_VIOLATION, at.NO_CHANGES, at.TESTS_FAILED, at.EXECUTOR_ERROR, at.TIMEOUT, at.BUDGET_EXHAUSTED}
)
_MAX_RESULT_BYTES = 1 << 20

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LostAttempt:
    """The ids of an attempt whose worker ended without a terminal event."""

    target_id: str
    task_id: str
    attempt_id: str
    number: int
    branch_name: str | None = None

    @property
    def branch(self) -> str:
        return self.branch_name or at.branch_name_for(self.task_id, self.attempt_id)


class ForgeUnavailable(LeviathanError):
    """The forge could not be asked; the attempt must not be declared lost on a guess."""


def recover_outcome(attempt: LostAttempt, home: LeviathanHome, forge: Forge | None) -> list[Event]:
    """The events that record what the attempt's worker did, or [] if nothing can be recovered.

    Raises :class:`ForgeUnavailable` when the forge fails to answer: the caller decides whether to
    wait (reconciliation, next tick) or record the attempt lost with that reason.
    """
    if forge is not None:
        try:
            pull = _attempt_pull_request(attempt, forge)
        except LeviathanError as exc:
            raise ForgeUnavailable(f"cannot ask the forge about {attempt.branch}: {exc}") from exc
        if pull is not None:
            ids = {
                "attempt_id": attempt.attempt_id,
                "target_id": attempt.target_id,
                "task_id": attempt.task_id,
            }
            logger.warning("attempt %s: recovered PR #%d from the forge", attempt.attempt_id, pull.number)
            return [
                lifecycle.pr_created(
                    **ids,
                    pr_number=pull.number,
                    pr_url=pull.url,
                    branch_name=pull.head,
                    actor_id=ORCHESTRATOR,
                ),
                lifecycle.attempt_succeeded(
                    **ids,
                    actor_id=ORCHESTRATOR,
                    attempt_number=attempt.number,
                    pr_number=pull.number,
                    pr_url=pull.url,
                    branch_name=pull.head,
                    recovered_from="forge",
                    **recorded_usage(home, attempt.attempt_id),
                ),
            ]
    result = read_result(home, attempt.attempt_id)
    if result is not None and result.get("status") == "failed":
        failure = result.get("failure_type")
        summary = result.get("summary")
        return [
            lifecycle.attempt_failed(
                attempt_id=attempt.attempt_id,
                target_id=attempt.target_id,
                task_id=attempt.task_id,
                failure_type=failure if failure in KNOWN_FAILURES else at.INFRASTRUCTURE,
                error_summary=(summary if isinstance(summary, str) else "")[:500],
                actor_id=ORCHESTRATOR,
                attempt_number=attempt.number,
                recovered_from=RESULT_FILE,
                **recorded_usage(home, attempt.attempt_id),
            )
        ]
    return []


def read_result(home: LeviathanHome, attempt_id: str) -> dict | None:
    """The worker's result.json for the attempt, or None when missing, oversized or not an object."""
    return _read_object(home.artifacts_dir(attempt_id) / RESULT_FILE)


def recorded_usage(home: LeviathanHome, attempt_id: str) -> dict:
    """``{"usage": ...}``: the totals of the worker's usage.json (without its per-call rows, which
    stay in the artifact), or ``{}`` when it left none (or not here: a pod's own disk)."""
    data = _read_object(home.artifacts_dir(attempt_id) / USAGE_FILE)
    if data is None or not isinstance(data.get("calls"), int):
        return {}
    return {"usage": {k: v for k, v in data.items() if k != "per_call"}}


def _read_object(path: Path) -> dict | None:
    try:
        if path.stat().st_size > _MAX_RESULT_BYTES:
            return None
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _attempt_pull_request(attempt: LostAttempt, forge: Forge):  # -> PullRequest | None
    marker = f"{attempt.target_id}/{attempt.task_id}"
    for pull in forge.list_pull_requests("all"):
        if pull.head == attempt.branch and parse_task_marker(pull.body) == marker:
            return pull
    return None
