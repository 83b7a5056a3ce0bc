"""Readiness: for every task, ready or not, and always *why*.

Pure and deterministic: the inputs are the backlog on the base branch, the attempt ledger (from the
event log), the target's open pull requests and the clock. Ready tasks are ordered by priority
(5 first), then backlog order.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from leviathan_dagster.core.attempts.ledger import AttemptLedger, TaskHistory
from leviathan_dagster.core.attempts.path_policy import task_paths_in_scope
from leviathan_dagster.core.events.model import format_timestamp, parse_timestamp
from leviathan_dagster.core.generators.registry import uses_model_tokens
from leviathan_dagster.core.models import Backlog, Policy, PullRequest, TargetConfig, Task

READY = "ready"
NOT_READY_FLAG = "not_ready"
STATUS = "status"
DEPENDENCY = "dependency"
OUT_OF_SCOPE = "out_of_scope"
ESCALATED = "escalated"
ATTEMPTS_EXHAUSTED = "attempts_exhausted"
IN_PROGRESS = "in_progress"
BACKOFF = "backoff"
OPEN_PR = "open_pr"
CIRCUIT_OPEN = "circuit_open"
MAX_OPEN_PRS = "max_open_prs"
MAX_RUNNING = "max_running_attempts"
GLOBAL_LIMIT = "global_limit"
DAILY_BUDGET = "daily_budget"
PAUSED = "paused"
MODEL_ACCOUNT = "model_account"
INFRASTRUCTURE_STREAK = "infrastructure_streak"
# Reasons after which no attempt comes without a human (or a backlog edit): no next attempt to show.
NO_NEXT_ATTEMPT = (STATUS, ESCALATED, ATTEMPTS_EXHAUSTED)


@dataclass(frozen=True)
class Readiness:
    target_id: str
    task_id: str
    ready: bool
    reason: str
    detail: str
    priority: int
    order: int
    next_attempt_number: int
    not_before: str | None = None

    @property
    def next_attempt(self) -> int | None:
        """The number the task's next attempt will take; None when none comes (completed or another
        status than pending, escalated, attempts spent): the reason says why."""
        return None if self.reason in NO_NEXT_ATTEMPT else self.next_attempt_number

    def as_row(self) -> dict[str, object]:
        return {
            "task": self.task_id,
            "ready": self.ready,
            "reason": self.reason,
            "detail": self.detail,
            "priority": self.priority,
            "next_attempt": self.next_attempt,
        }


def evaluate_target(
    target: TargetConfig,
    backlog: Backlog,
    ledger: AttemptLedger,
    open_prs: Sequence[PullRequest],
    now: datetime,
    *,
    queued_tasks: Collection[str] = (),
) -> list[Readiness]:
    """Readiness of every task of one target; target-wide limits applied in priority order.

    ``queued_tasks`` are tasks with an attempt run requested but not yet recorded in the log (for
    example a queued Dagster run): they count as running so no second attempt is requested.
    """
    policy = target.policy
    marked = {pr.task_marker(): pr for pr in open_prs}
    agent_prs = [pr for pr in open_prs if pr.head.startswith("agent/")]
    by_id = {task.id: task for task in backlog.tasks}
    results = [
        _evaluate_task(target, task, index, by_id, ledger.task(target.id, task.id), marked, now, queued_tasks)
        for index, task in enumerate(backlog.tasks)
    ]

    running = count_running(ledger, target.id, queued_tasks)
    target_history = ledger.target(target.id)
    breaker_open = (
        target_history.circuit_opened
        or target_history.consecutive_failures >= policy.circuit_breaker_failures
    )
    # Every running or queued attempt ends in a PR if it succeeds, so it holds a PR slot already:
    # without this, max_open_prs=1 with two attempts in flight could open two PRs.
    prs_committed = len(agent_prs) + running
    limited: dict[str, Readiness] = {}
    spent_today = ledger.tokens_on(target.id, now.astimezone(UTC).date())
    for candidate in order_ready(results):
        over_budget = _daily_budget_detail(policy, spent_today, running)
        if target_history.paused_by is not None:
            detail = f"target '{target.id}' paused by {target_history.paused_by}"
            detail += f": {target_history.paused_reason}" if target_history.paused_reason else ""
            limited[candidate.task_id] = _not_ready(candidate, PAUSED, detail + "; resume it to continue")
        elif target_history.account_refused is not None:
            detail = (
                f"target '{target.id}' paused: the model provider refused its account "
                f"({target_history.account_refused}); fix the key, billing or permissions, then "
                f"`leviathan target resume {target.id}`"
            )
            limited[candidate.task_id] = _not_ready(candidate, MODEL_ACCOUNT, detail)
        elif breaker_open:
            detail = (
                f"circuit breaker open for target '{target.id}' after "
                f"{target_history.consecutive_failures} consecutive failures "
                f"(circuit_breaker_failures: {policy.circuit_breaker_failures}); an operator must reset it"
            )
            limited[candidate.task_id] = _not_ready(candidate, CIRCUIT_OPEN, detail)
        elif over_budget and uses_model_tokens(by_id[candidate.task_id]):
            limited[candidate.task_id] = _not_ready(candidate, DAILY_BUDGET, over_budget)
        elif prs_committed >= policy.max_open_prs:
            detail = (
                f"{prs_committed} agent PRs open or on the way ({len(agent_prs)} open), "
                f"max_open_prs is {policy.max_open_prs}"
            )
            limited[candidate.task_id] = _not_ready(candidate, MAX_OPEN_PRS, detail)
        elif running >= policy.max_running_attempts:
            detail = (
                f"{running} attempts running or queued, max_running_attempts is {policy.max_running_attempts}"
            )
            limited[candidate.task_id] = _not_ready(candidate, MAX_RUNNING, detail)
        else:
            # This candidate takes a slot: tasks after it see it counted as running.
            prs_committed += 1
            running += 1
    return [limited.get(r.task_id, r) for r in results]


def evaluate_task_alone(
    target: TargetConfig,
    backlog: Backlog,
    ledger: AttemptLedger,
    open_prs: Sequence[PullRequest],
    now: datetime,
    *,
    task_id: str,
    queued_tasks: Collection[str] = (),
) -> Readiness:
    """``task_id``'s readiness with the target's other tasks set aside.

    For a task already chosen to start (a launched attempt run re-checking at run time, an operator's
    run-now): every guardrail and every limit against what really runs still applies, but another
    ready task of higher priority that is *not* starting cannot take the slot this one is judged
    against. (A backlog task ``task_id`` must exist; callers check.)
    """
    alone = replace(
        backlog, tasks=tuple(t if t.id == task_id else replace(t, ready=False) for t in backlog.tasks)
    )
    evaluated = evaluate_target(target, alone, ledger, open_prs, now, queued_tasks=queued_tasks)
    return next(r for r in evaluated if r.task_id == task_id)


def evaluate_launched_task(
    target: TargetConfig,
    backlog: Backlog,
    ledger: AttemptLedger,
    open_prs: Sequence[PullRequest],
    now: datetime,
    *,
    task_id: str,
    queued_tasks: Collection[str] = (),
    max_concurrent: int | None = None,
    running_total: int = 0,
    forgive_streak: bool = False,
) -> Readiness:
    """The readiness of a task whose run has been started (by the scheduler or an operator's run-now).

    Judged alone (``evaluate_task_alone``). A retry's backoff is the one wait such a run skips: a task
    in backoff is judged as at the end of it, so every other guardrail still holds. ``max_concurrent``
    (run-now only; the scheduler's selection already applied it) adds the global limit against
    ``running_total`` attempts running or queued. ``forgive_streak`` (an operator's run-now): a task held
    by an infrastructure streak is judged as it will be once the operator's event, which starts a new
    streak, is recorded.
    """
    result = evaluate_task_alone(
        target, backlog, ledger, open_prs, now, task_id=task_id, queued_tasks=queued_tasks
    )
    if forgive_streak and result.reason == INFRASTRUCTURE_STREAK:
        ledger = ledger.with_streak_forgiven(target.id, task_id)
        result = evaluate_task_alone(
            target, backlog, ledger, open_prs, now, task_id=task_id, queued_tasks=queued_tasks
        )
    if result.reason == BACKOFF and result.not_before:
        later = parse_timestamp(result.not_before)
        result = evaluate_task_alone(
            target, backlog, ledger, open_prs, later, task_id=task_id, queued_tasks=queued_tasks
        )
    if result.ready and max_concurrent is not None and running_total >= max_concurrent:
        detail = f"{running_total} attempts running or queued, max_concurrent_attempts is {max_concurrent}"
        result = _not_ready(result, GLOBAL_LIMIT, detail)
    return result


def _daily_budget_detail(policy: Policy, spent_today: int, running: int) -> str | None:
    """Why one more model attempt could exceed the target's daily token budget (None: it cannot).

    Checked before scheduling, like the per-call budget: each attempt in flight (or admitted in this
    cycle) may still spend up to ``max_tokens_per_attempt`` that the log does not show yet.
    """
    if policy.daily_token_budget is None:
        return None
    worst = spent_today + (running + 1) * policy.max_tokens_per_attempt
    if worst <= policy.daily_token_budget:
        return None
    return (
        f"{spent_today} tokens spent today (UTC) + {running + 1} attempt(s) x max_tokens_per_attempt "
        f"{policy.max_tokens_per_attempt} could exceed daily_token_budget {policy.daily_token_budget}"
    )


def count_running(ledger: AttemptLedger, target_id: str, queued_tasks: Collection[str]) -> int:
    """Attempts in flight in the log plus queued runs not yet in it (never both for one task)."""
    in_log = ledger.running(target_id)
    logged_tasks = {a.task_id for a in in_log}
    return len(in_log) + sum(1 for t in set(queued_tasks) if t not in logged_tasks)


def order_ready(results: Sequence[Readiness]) -> list[Readiness]:
    """Ready tasks, highest priority first, then backlog order."""
    return sorted((r for r in results if r.ready), key=lambda r: (-r.priority, r.order))


def select_across_targets(
    evaluations: Mapping[str, Sequence[Readiness]],
    *,
    max_concurrent: int,
    running_total: int,
    last_attempt_at: Mapping[str, str | None],
) -> tuple[list[Readiness], dict[str, list[Readiness]]]:
    """Apply the global limit fairly: round-robin over targets, least recently served first.

    Returns the selected attempts and the evaluations with unselected ready tasks marked
    ``global_limit``. A target never attempted sorts first, then by last attempt time, then by id,
    so no target starves while the global limit binds.
    """
    queues = {target_id: order_ready(results) for target_id, results in evaluations.items()}
    turn_order = sorted(
        queues, key=lambda t: (last_attempt_at.get(t) is not None, last_attempt_at.get(t) or "", t)
    )
    slots = max(0, max_concurrent - running_total)
    selected: list[Readiness] = []
    while slots > 0 and any(queues.values()):
        for target_id in turn_order:
            if slots > 0 and queues[target_id]:
                selected.append(queues[target_id].pop(0))
                slots -= 1
    chosen = {(r.target_id, r.task_id) for r in selected}
    detail = f"global limit of {max_concurrent} concurrent attempts reached"
    updated = {
        target_id: [
            _not_ready(r, GLOBAL_LIMIT, detail) if r.ready and (r.target_id, r.task_id) not in chosen else r
            for r in results
        ]
        for target_id, results in evaluations.items()
    }
    return selected, updated


def _evaluate_task(
    target: TargetConfig,
    task: Task,
    index: int,
    by_id: Mapping[str, Task],
    history: TaskHistory,
    open_pr_by_marker: Mapping[str | None, PullRequest],
    now: datetime,
    queued_tasks: Collection[str],
) -> Readiness:
    policy = target.policy

    # Built once per task with its final verdict: this runs for every task on every tick, and copying
    # a "ready" base with dataclasses.replace for each not-ready task cost a fifth of the decision.
    def verdict(reason: str, detail: str, not_before: str | None = None) -> Readiness:
        return Readiness(
            target.id,
            task.id,
            reason == READY,
            reason,
            detail,
            task.priority,
            index,
            history.next_number,
            not_before,
        )

    if task.status != "pending":
        return verdict(STATUS, f"status is '{task.status}' (only 'pending' tasks run)")
    if not task.ready:
        return verdict(NOT_READY_FLAG, "'ready' is false in the backlog")
    outside = task_paths_in_scope(task.allowed_paths, target.policy.allowed_path_prefixes)
    if outside:
        prefixes = ", ".join(target.policy.allowed_path_prefixes)
        return verdict(
            OUT_OF_SCOPE, f"allowed_paths {', '.join(outside)} outside the target's prefixes ({prefixes})"
        )
    for dep in task.dependencies:
        dep_task = by_id.get(dep)
        if dep_task is None or dep_task.status != "completed":
            status = dep_task.status if dep_task else "missing"
            return verdict(DEPENDENCY, f"waits for dependency '{dep}' (status: {status})")
    running = history.in_flight()
    if running is not None:
        return verdict(IN_PROGRESS, f"attempt {running.number} ({running.attempt_id}) is {running.status}")
    if task.id in queued_tasks:
        return verdict(IN_PROGRESS, f"attempt {history.next_number} is queued")
    pr = open_pr_by_marker.get(f"{target.id}/{task.id}")
    if pr is not None:
        return verdict(OPEN_PR, f"PR #{pr.number} is open for this task ({pr.url})")
    if history.escalated:
        return verdict(
            ESCALATED,
            f"escalated after {history.counted_failures} failed attempts; needs a human: fix the task, "
            f"then `leviathan task clear-escalation {target.id} {task.id}` (or clear_escalation_job)",
        )
    if history.counted_attempts >= policy.max_attempts_per_task:
        return verdict(
            ATTEMPTS_EXHAUSTED,
            f"{history.counted_attempts} of {policy.max_attempts_per_task} attempts used "
            f"(max_attempts_per_task); `leviathan task clear-escalation {target.id} {task.id}` gives "
            "it a fresh budget",
        )
    streak = history.infrastructure_streak
    if len(streak) >= policy.infrastructure_streak_limit:
        return verdict(
            INFRASTRUCTURE_STREAK,
            f"{len(streak)} infrastructure failures in a row (infrastructure_streak_limit "
            f"{policy.infrastructure_streak_limit}), last: {(streak[-1].error_summary or '')[:300]}; "
            "fix the cause, then run_task_now_job",
        )
    last = history.last
    if last is not None and last.status == "failed" and last.ended_at is not None:
        until = last.ended_at + timedelta(seconds=policy.backoff_seconds)
        if now < until:
            stamp = format_timestamp(until)
            detail = f"attempt {last.number} failed ({last.failure_type}); backoff until {stamp}"
            return verdict(BACKOFF, detail, not_before=stamp)
    return verdict(READY, "ready")


def _not_ready(base: Readiness, reason: str, detail: str) -> Readiness:
    return replace(base, ready=False, reason=reason, detail=detail)
