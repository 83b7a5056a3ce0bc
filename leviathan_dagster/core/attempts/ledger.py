"""Attempt records, derived only from the event log (Leviathan's own records, never Dagster's).

The ledger is a pure fold over events: the same log always gives the same records, so readiness and
attempt numbering are reproducible and survive restarts of every process.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime

from leviathan_dagster.core import failures
from leviathan_dagster.core.events import model as ev
from leviathan_dagster.core.events.model import StoredEvent, parse_timestamp
from leviathan_dagster.core.events.schemas import Anomaly, fold_anomaly

# The failure types by name: what each one means (counts, retried, exit code) is failures.py's table.
from leviathan_dagster.core.failures import BUDGET_EXHAUSTED as BUDGET_EXHAUSTED
from leviathan_dagster.core.failures import EXECUTOR_ERROR as EXECUTOR_ERROR
from leviathan_dagster.core.failures import INFRASTRUCTURE as INFRASTRUCTURE
from leviathan_dagster.core.failures import MODEL_ACCOUNT as MODEL_ACCOUNT
from leviathan_dagster.core.failures import NO_CHANGES as NO_CHANGES
from leviathan_dagster.core.failures import POLICY_VIOLATION as POLICY_VIOLATION
from leviathan_dagster.core.failures import PR_CLOSED as PR_CLOSED
from leviathan_dagster.core.failures import PUSH_REJECTED as PUSH_REJECTED
from leviathan_dagster.core.failures import TESTS_FAILED as TESTS_FAILED
from leviathan_dagster.core.failures import TIMEOUT as TIMEOUT
from leviathan_dagster.core.models import branch_name_for as branch_name_for

CREATED, RUNNING, SUCCEEDED, FAILED = "created", "running", "succeeded", "failed"
TERMINAL = (SUCCEEDED, FAILED)

# The failure types (``at.TIMEOUT``, ...) are the names of failures.py's table, imported above.
FAILURE_TYPES = failures.FAILURE_TYPES


def make_attempt_id(target_id: str, task_id: str, attempt_number: int) -> str:
    """Deterministic: the same task and number always name the same attempt (and branch)."""
    digest = hashlib.sha256(f"{target_id}/{task_id}/{attempt_number}".encode()).hexdigest()
    return f"attempt-{digest[:12]}"


def task_key(target_id: str, task_id: str) -> str:
    """The Dagster partition key of a task; ids are restricted so this is always a valid key."""
    return f"{target_id}/{task_id}"


def split_task_key(key: str) -> tuple[str, str]:
    target_id, _, task_id = key.partition("/")
    return target_id, task_id


@dataclass(frozen=True)
class AttemptRecord:
    attempt_id: str
    target_id: str
    task_id: str
    number: int
    status: str
    created_at: str
    started_at: str | None = None
    completed_at: str | None = None
    failure_type: str | None = None
    error_summary: str | None = None
    branch_name: str | None = None
    commit_sha: str | None = None
    pr_number: int | None = None
    pr_url: str | None = None
    run_id: str | None = None
    # Model token totals of the attempt (the ``usage`` of attempt.succeeded/failed); None: no model used.
    usage: dict | None = None

    @property
    def in_flight(self) -> bool:
        return self.status not in TERMINAL

    @property
    def counts_against_task(self) -> bool:
        """Infrastructure and model-account failures are not the task's fault: they never count
        (failures.TABLE says which types count)."""
        return not (self.status == FAILED and not failures.counts_against_task(self.failure_type))

    @property
    def ended_at(self) -> datetime | None:
        return parse_timestamp(self.completed_at) if self.completed_at else None


_RECORD_FIELDS = tuple(f.name for f in fields(AttemptRecord))
_new_record = object.__new__


@dataclass
class TaskHistory:
    attempts: list[AttemptRecord] = field(default_factory=list)
    escalated: bool = False
    retries_scheduled: set[int] = field(default_factory=set)
    completed: bool = False
    # Attempts before the operator's last run-now or cancel: each starts a new infrastructure streak.
    streak_start: int = 0
    # Attempts before the last ``task.escalation_cleared``: they stay in the history (and in attempt
    # numbering) but no longer count against max_attempts_per_task, escalation_after, the
    # infrastructure streak or the backoff.
    budget_start: int = 0

    @property
    def budget(self) -> list[AttemptRecord]:
        """The attempts since the task's attempt budget last began (all of them unless an operator
        cleared its escalation)."""
        return self.attempts[self.budget_start :]

    @property
    def counted_attempts(self) -> int:
        return sum(1 for a in self.budget if a.counts_against_task)

    @property
    def counted_failures(self) -> int:
        return sum(1 for a in self.budget if a.status == FAILED and a.counts_against_task)

    @property
    def infrastructure_streak(self) -> list[AttemptRecord]:
        """The failed attempts at the end of the history that did not count (infrastructure), newest
        last; a counted end, or an operator's run-now or cancel, ends the streak."""
        streak: list[AttemptRecord] = []
        for record in reversed(self.attempts[max(self.streak_start, self.budget_start) :]):
            if record.status != FAILED or record.counts_against_task:
                break
            streak.insert(0, record)
        return streak

    @property
    def next_number(self) -> int:
        return max((a.number for a in self.attempts), default=0) + 1

    @property
    def last(self) -> AttemptRecord | None:
        """The newest attempt of the current budget (its failure sets the backoff)."""
        return self.budget[-1] if self.budget else None

    def in_flight(self) -> AttemptRecord | None:
        return next((a for a in self.attempts if a.in_flight), None)


@dataclass
class TargetHistory:
    consecutive_failures: int = 0
    circuit_opened: bool = False
    last_attempt_at: str | None = None
    # Set by an operator (``target.paused``/``target.resumed``): no new attempts while paused.
    paused_by: str | None = None
    paused_reason: str | None = None
    # The summary of a ``model_account`` failure: no new attempts until an operator resumes the target.
    account_refused: str | None = None


class AttemptLedger:
    """Every attempt, per task and per target, folded from the event log."""

    def __init__(self) -> None:
        self._attempts: dict[str, AttemptRecord] = {}
        # Indexes, so that no query or fold step scans every attempt ever made: per target, and per
        # (target, PR number) the attempts that opened that PR (a close folds in O(1), not O(attempts)).
        self._by_target: dict[str, dict[str, AttemptRecord]] = {}
        self._in_flight: dict[str, dict[str, AttemptRecord]] = {}
        self._by_pr: dict[tuple[str, int], list[str]] = {}
        self._by_run: dict[str, str] = {}
        # target -> PR number -> attempt ids, for the PRs not yet recorded as merged or closed.
        self._open_prs: dict[str, dict[int, list[str]]] = {}
        self._tasks: dict[tuple[str, str], TaskHistory] = {}
        self._targets: dict[str, TargetHistory] = {}
        # (target, UTC day) -> model tokens of the attempts that ended that day (the daily budget).
        self._tokens_by_day: dict[tuple[str, date], int] = {}
        # (target, PR number) of every PR recorded as merged or closed.
        self.finished_prs: set[tuple[str, int]] = set()
        self.last_seq = 0
        # Malformed events found in the log: skipped, reported for their attempt or target.
        self.anomalies: list[Anomaly] = []

    @classmethod
    def from_events(cls, events: Iterable[StoredEvent]) -> AttemptLedger:
        ledger = cls()
        ledger.apply(events)
        return ledger

    def apply(self, events: Iterable[StoredEvent]) -> None:
        for stored in events:
            self._apply_one(stored)
            self.last_seq = stored.seq

    def attempt(self, attempt_id: str) -> AttemptRecord | None:
        return self._attempts.get(attempt_id)

    def task(self, target_id: str, task_id: str) -> TaskHistory:
        return self._tasks.get((target_id, task_id)) or TaskHistory()

    def target(self, target_id: str) -> TargetHistory:
        return self._targets.get(target_id) or TargetHistory()

    def with_streak_forgiven(self, target_id: str, task_id: str) -> AttemptLedger:
        """A copy of this ledger as it will be once an operator's run-now of the task is recorded."""
        forgiven = copy.copy(self)
        forgiven._tasks = dict(self._tasks)
        history = self.task(target_id, task_id)
        forgiven._tasks[(target_id, task_id)] = replace(history, streak_start=len(history.attempts))
        return forgiven

    def attempts(self, target_id: str | None = None) -> list[AttemptRecord]:
        """Every attempt (of ``target_id``), oldest first. ``list()`` of a dict view is one step under
        the GIL, so a reader in another thread never sees a dict change size mid-iteration."""
        if target_id is None:
            return list(self._attempts.values())
        return list(self._by_target.get(target_id, {}).values())

    def running(self, target_id: str | None = None) -> list[AttemptRecord]:
        """Attempts not finished yet (of ``target_id``)."""
        if target_id is None:
            return [a for records in list(self._in_flight.values()) for a in list(records.values())]
        return list(self._in_flight.get(target_id, {}).values())

    def attempt_of_run(self, run_id: str) -> AttemptRecord | None:
        """The attempt the Dagster run ``run_id`` created, if it created one."""
        attempt_id = self._by_run.get(run_id)
        return self._attempts.get(attempt_id) if attempt_id else None

    def attempts_with_pr(self, target_id: str, pr_number: int) -> list[AttemptRecord]:
        """The attempts that opened PR ``pr_number`` of ``target_id``, oldest first."""
        ids = list(self._by_pr.get((target_id, pr_number), ()))
        return [self._attempts[i] for i in ids]

    def open_pr_attempts(self, target_id: str) -> list[AttemptRecord]:
        """Attempts whose PR the log has not seen merged or closed (what the PR sensor watches)."""
        ids = [i for group in list(self._open_prs.get(target_id, {}).values()) for i in list(group)]
        return [self._attempts[i] for i in ids]

    def tokens_on(self, target_id: str, day: date) -> int:
        """Model tokens spent by ``target_id``'s attempts that ended on ``day`` (UTC)."""
        return self._tokens_by_day.get((target_id, day), 0)

    # -- snapshots (core/projections/snapshots.py) ----------------------------------------------
    # Everything the fold holds, as JSON-able lists in the fold's own order (dict order is what
    # ``attempts()`` and friends return, so it is kept); sets sorted, so equal folds give equal bytes.
    # The per-target, in-flight and per-run indexes follow from the attempts' order and are rebuilt;
    # the PR indexes depend on the order PR numbers were recorded, so they are kept as they are.
    STATE_VERSION = 1

    def to_state(self) -> dict:
        return {
            "last_seq": self.last_seq,
            "attempts": [list(vars(record).values()) for record in self._attempts.values()],
            "by_pr": [[t, n, list(ids)] for (t, n), ids in self._by_pr.items()],
            "open_prs": [
                [t, [[n, list(ids)] for n, ids in prs.items()]] for t, prs in self._open_prs.items()
            ],
            "tasks": [
                [t, k, [a.attempt_id for a in h.attempts], h.escalated, sorted(h.retries_scheduled)]
                + [h.completed, h.streak_start, h.budget_start]
                for (t, k), h in self._tasks.items()
            ],
            "targets": [[t, *vars(target).values()] for t, target in self._targets.items()],
            "tokens_by_day": [[t, day.isoformat(), n] for (t, day), n in self._tokens_by_day.items()],
            "finished_prs": sorted([t, n] for t, n in self.finished_prs),
            "anomalies": [list(vars(a).values()) for a in self.anomalies],
        }

    @classmethod
    def from_state(cls, state: dict) -> AttemptLedger:
        ledger = cls()
        ledger.last_seq = state["last_seq"]
        ledger.finished_prs = {(t, n) for t, n in state["finished_prs"]}
        # What ``_store`` does per record, inlined: this loop runs once per attempt ever made.
        by_target, in_flight, by_run = ledger._by_target, ledger._in_flight, ledger._by_run
        for row in state["attempts"]:
            # The frozen dataclass's __init__ sets each field through object.__setattr__; filling the
            # instance dict directly builds the same record in half the time (one per attempt ever).
            record = _new_record(AttemptRecord)
            record.__dict__.update(zip(_RECORD_FIELDS, row, strict=True))
            ledger._attempts[record.attempt_id] = record
            by_target.setdefault(record.target_id, {})[record.attempt_id] = record
            running = in_flight.setdefault(record.target_id, {})
            if record.status not in TERMINAL:
                running[record.attempt_id] = record
            if record.run_id:
                by_run.setdefault(record.run_id, record.attempt_id)
        ledger._by_pr = {(t, n): list(ids) for t, n, ids in state["by_pr"]}
        ledger._open_prs = {t: {n: list(ids) for n, ids in prs} for t, prs in state["open_prs"]}
        for t, k, ids, escalated, retries, completed, streak_start, budget_start in state["tasks"]:
            ledger._tasks[(t, k)] = TaskHistory(
                [ledger._attempts[i] for i in ids],
                escalated,
                set(retries),
                completed,
                streak_start,
                budget_start,
            )
        ledger._targets = {row[0]: TargetHistory(*row[1:]) for row in state["targets"]}
        ledger._tokens_by_day = {(t, date.fromisoformat(d)): n for t, d, n in state["tokens_by_day"]}
        ledger.anomalies = [Anomaly(*row) for row in state["anomalies"]]
        return ledger

    # -- folding -------------------------------------------------------------------------------
    def _apply_one(self, stored: StoredEvent) -> None:
        if (anomaly := fold_anomaly(stored)) is not None:
            self.anomalies.append(anomaly)
            return
        kind, payload, at = stored.event_type, stored.payload, stored.event.timestamp
        if kind == ev.ATTEMPT_CREATED:
            self._on_created(payload, at)
        elif kind in (ev.ATTEMPT_STARTED, ev.ATTEMPT_SUCCEEDED, ev.ATTEMPT_FAILED, ev.PR_CREATED):
            self._on_progress(kind, payload, at)
        elif kind == ev.TASK_ESCALATED:
            self._history(payload["target_id"], payload["task_id"]).escalated = True
        elif kind == ev.TASK_ESCALATION_CLEARED:
            history = self._history(payload["target_id"], payload["task_id"])
            history.escalated = history.completed = False
            history.budget_start = history.streak_start = len(history.attempts)
        elif kind == ev.RETRY_SCHEDULED:
            history = self._history(payload["target_id"], payload["task_id"])
            history.retries_scheduled.add(int(payload["retry_number"]))
        elif kind in (ev.PR_MERGED, ev.PR_CLOSED):
            self._on_pr_finished(kind, payload, at)
        elif kind in (ev.RUN_NOW_REQUESTED, ev.CANCEL_REQUESTED):
            # An operator acted on the task: what failed before (or is being cancelled, which ends
            # as infrastructure too) is not an outage, so a new infrastructure streak starts.
            # The schemas let a cancel name only its attempt: find the task through it.
            attempt = self._attempts.get(payload.get("attempt_id") or "")
            target_id = payload.get("target_id") or (attempt.target_id if attempt else None)
            task_id = payload.get("task_id") or (attempt.task_id if attempt else None)
            if target_id and task_id:
                history = self._history(target_id, task_id)
                history.streak_start = len(history.attempts)
        elif kind == ev.TASK_COMPLETED:
            self._history(payload["target_id"], payload["task_id"]).completed = True
        elif kind == ev.CIRCUIT_OPENED:
            self._target(payload["target_id"]).circuit_opened = True
        elif kind == ev.CIRCUIT_RESET:
            target = self._target(payload["target_id"])
            target.circuit_opened = False
            target.consecutive_failures = 0
        elif kind == ev.TARGET_PAUSED:
            target = self._target(payload["target_id"])
            target.paused_by = stored.event.actor_id
            target.paused_reason = payload.get("reason") or ""
        elif kind == ev.TARGET_RESUMED:
            target = self._target(payload["target_id"])
            target.paused_by = target.paused_reason = target.account_refused = None

    def _on_created(self, payload: dict, at: str) -> None:
        attempt_id = payload["attempt_id"]
        if attempt_id in self._attempts:  # a replayed event: the first one wins
            return
        record = AttemptRecord(
            attempt_id=attempt_id,
            target_id=payload["target_id"],
            task_id=payload["task_id"],
            number=int(payload["attempt_number"]),
            status=CREATED,
            created_at=payload.get("created_at", at),
            branch_name=payload.get("branch_name"),
            run_id=payload.get("run_id"),
        )
        self._store(record)
        self._history(record.target_id, record.task_id).attempts.append(record)
        self._target(record.target_id).last_attempt_at = record.created_at

    def _on_progress(self, kind: str, payload: dict, at: str) -> None:
        old = self._attempts.get(payload.get("attempt_id", ""))
        if old is None or (old.status in TERMINAL and kind != ev.PR_CREATED):
            return  # unknown attempt or already finished: a late duplicate changes nothing
        if kind == ev.ATTEMPT_STARTED:
            if old.started_at is not None:
                return  # a replayed start keeps the first start time
            new = replace(old, status=RUNNING, started_at=payload.get("started_at", at))
        elif kind == ev.PR_CREATED:
            new = replace(old, pr_number=payload.get("pr_number"), pr_url=payload.get("pr_url"))
        else:
            new = replace(
                old,
                status=SUCCEEDED if kind == ev.ATTEMPT_SUCCEEDED else FAILED,
                completed_at=payload.get("completed_at", at),
                failure_type=payload.get("failure_type"),
                error_summary=payload.get("error_summary"),
                branch_name=payload.get("branch_name", old.branch_name),
                commit_sha=payload.get("commit_sha", old.commit_sha),
                pr_url=payload.get("pr_url", old.pr_url),
                pr_number=payload.get("pr_number", old.pr_number),
                usage=payload.get("usage") if isinstance(payload.get("usage"), dict) else None,
            )
            self._count_for_circuit(new)
            self._count_tokens(new)
            if new.failure_type == MODEL_ACCOUNT:
                self._target(new.target_id).account_refused = new.error_summary or MODEL_ACCOUNT
        self._replace(old, new)

    def _on_pr_finished(self, kind: str, payload: dict, at: str) -> None:
        key = (payload["target_id"], int(payload["pr_number"]))
        if key in self.finished_prs:
            return
        self.finished_prs.add(key)
        self._open_prs.get(key[0], {}).pop(key[1], None)
        if kind != ev.PR_CLOSED:
            return
        # Closed without merge: the attempt that opened the PR becomes a counted failure (against
        # max_attempts_per_task, escalation and the circuit breaker), as if its tests had failed.
        for old in self.attempts_with_pr(*key):
            if old.pr_number != key[1] or old.status != SUCCEEDED:
                continue
            new = replace(
                old,
                status=FAILED,
                failure_type=PR_CLOSED,
                completed_at=payload.get("closed_at") or at,
                error_summary=f"pull request #{key[1]} was closed without merge",
            )
            self._count_for_circuit(new)
            self._replace(old, new)

    def _count_for_circuit(self, record: AttemptRecord) -> None:
        target = self._target(record.target_id)
        if record.status == SUCCEEDED:
            target.consecutive_failures = 0
        elif record.counts_against_task:
            target.consecutive_failures += 1

    def _count_tokens(self, record: AttemptRecord) -> None:
        usage = record.usage or {}
        # Billed tokens (cache reads at their rate) when the attempt recorded them, as its budget counted.
        tokens = usage.get("billed_tokens", usage.get("total_tokens"))
        if isinstance(tokens, int) and tokens > 0 and record.completed_at:
            key = (record.target_id, parse_timestamp(record.completed_at).date())
            self._tokens_by_day[key] = self._tokens_by_day.get(key, 0) + tokens

    def _store(self, record: AttemptRecord) -> None:
        self._attempts[record.attempt_id] = record
        self._by_target.setdefault(record.target_id, {})[record.attempt_id] = record
        running = self._in_flight.setdefault(record.target_id, {})
        if record.in_flight:
            running[record.attempt_id] = record
        else:
            running.pop(record.attempt_id, None)
        if record.run_id:
            self._by_run.setdefault(record.run_id, record.attempt_id)
        if record.pr_number is not None:
            ids = self._by_pr.setdefault((record.target_id, int(record.pr_number)), [])
            if record.attempt_id not in ids:
                ids.append(record.attempt_id)
            if (record.target_id, int(record.pr_number)) not in self.finished_prs:
                group = self._open_prs.setdefault(record.target_id, {}).setdefault(int(record.pr_number), [])
                if record.attempt_id not in group:
                    group.append(record.attempt_id)

    def _replace(self, old: AttemptRecord, new: AttemptRecord) -> None:
        self._store(new)
        attempts = self._history(new.target_id, new.task_id).attempts
        attempts[attempts.index(old)] = new

    def _history(self, target_id: str, task_id: str) -> TaskHistory:
        return self._tasks.setdefault((target_id, task_id), TaskHistory())

    def _target(self, target_id: str) -> TargetHistory:
        return self._targets.setdefault(target_id, TargetHistory())
