"""Delivery metrics per target and UTC day, folded from the event log: is Leviathan worth running?

Pure: the same events give the same numbers. A day's figures count what *happened* that day (an
attempt by the time it ended, a PR by the time it was opened, merged or closed); "attempts per merged
PR" and "tokens per merged PR" look back over the whole history of the tasks whose PR merged that day.
Token counts come from ``usage`` in terminal attempt events when the generator reports it (counts
only, never prompts); without any, the token figures are ``None`` rather than a misleading zero.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from statistics import mean, median

from leviathan_dagster.core.events import model as ev
from leviathan_dagster.core.events.model import StoredEvent, parse_timestamp
from leviathan_dagster.core.events.schemas import fold_anomaly

ENDED = (ev.ATTEMPT_SUCCEEDED, ev.ATTEMPT_FAILED)


@dataclass
class TargetDayMetrics:
    target_id: str
    day: str
    attempts: int = 0
    succeeded: int = 0
    failed: int = 0
    success_rate: float | None = None
    failures_by_type: dict[str, int] = field(default_factory=dict)
    prs_opened: int = 0
    prs_merged: int = 0
    prs_closed: int = 0
    median_time_to_merge_seconds: float | None = None
    mean_time_to_merge_seconds: float | None = None
    attempts_per_merged_pr: float | None = None
    tokens: int | None = None
    tokens_per_merged_pr: float | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def usage_tokens(payload: dict) -> int | None:
    """Total tokens of an attempt's ``usage`` (``total_tokens``, else the sum of ``*_tokens``)."""
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None
    if isinstance(usage.get("total_tokens"), int):
        return usage["total_tokens"]
    counts = [v for k, v in usage.items() if k.endswith("_tokens") and isinstance(v, int)]
    return sum(counts) if counts else None


def compute_delivery_metrics(events: Iterable[StoredEvent], day: date) -> dict[str, TargetDayMetrics]:
    """Metrics of ``day`` (UTC) for every target with an attempt or PR event that day."""
    fold = DeliveryFold()
    fold.apply(events)
    return fold.metrics_for(day)


class DeliveryFold:
    """What the delivery metrics of any day need, folded incrementally (one pass over the log, then
    only what was appended): per (target, day) counts, and per task the attempts' end times and tokens
    for the "per merged PR" figures, which look back over the task's whole history."""

    def __init__(self) -> None:
        self.last_seq = 0
        self._rows: dict[tuple[str, str], TargetDayMetrics] = {}
        self._failures: dict[tuple[str, str], Counter] = defaultdict(Counter)
        self._merge_times: dict[tuple[str, str], list[float]] = defaultdict(list)
        self._merged_tasks: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        self._opened_at: dict[tuple[str, int], str] = {}
        self._pr_task: dict[tuple[str, int], str] = {}
        self._attempts_by_task: dict[tuple[str, str], list[tuple[str, int | None]]] = defaultdict(list)

    def apply(self, events: Iterable[StoredEvent]) -> None:
        for stored in events:
            self._apply_one(stored)
            self.last_seq = stored.seq

    def metrics_for(self, day: date) -> dict[str, TargetDayMetrics]:
        """The finished figures of ``day`` per target (copies: the fold goes on)."""
        stamp = day.isoformat()
        out: dict[str, TargetDayMetrics] = {}
        for (target_id, row_day), row in self._rows.items():
            if row_day != stamp:
                continue
            key = (target_id, stamp)
            metrics = replace(row, failures_by_type={})
            _finish(
                metrics,
                self._failures[key],
                self._merge_times[key],
                self._merged_tasks[key],
                self._attempts_by_task,
            )
            out[target_id] = metrics
        return dict(sorted(out.items()))

    # -- snapshots (core/projections/snapshots.py) ----------------------------------------------
    # Keyed maps become lists of [key..., value] in the fold's order. Empty entries that a read
    # (``metrics_for`` indexing a defaultdict) left behind are dropped: they mean nothing, and
    # dropping them keeps a folded-and-read state byte-equal to a fresh fold.
    STATE_VERSION = 1

    def to_state(self) -> dict:
        return {
            "last_seq": self.last_seq,
            "rows": [asdict(row) for row in self._rows.values()],
            "failures": [[*key, list(c.items())] for key, c in self._failures.items() if c],
            "merge_times": [[*key, times] for key, times in self._merge_times.items() if times],
            "merged_tasks": [[*key, [list(m) for m in ms]] for key, ms in self._merged_tasks.items() if ms],
            "opened_at": [[*key, at] for key, at in self._opened_at.items()],
            "pr_task": [[*key, task] for key, task in self._pr_task.items()],
            "attempts_by_task": [
                [*key, [list(a) for a in v]] for key, v in self._attempts_by_task.items() if v
            ],
        }

    @classmethod
    def from_state(cls, state: dict) -> DeliveryFold:
        fold = cls()
        fold.last_seq = state["last_seq"]
        fold._rows = {(row["target_id"], row["day"]): TargetDayMetrics(**row) for row in state["rows"]}
        fold._failures.update(((t, d), Counter(dict(c))) for t, d, c in state["failures"])
        fold._merge_times.update(((t, d), list(times)) for t, d, times in state["merge_times"])
        fold._merged_tasks.update(((t, d), [tuple(m) for m in ms]) for t, d, ms in state["merged_tasks"])
        fold._opened_at = {(t, n): at for t, n, at in state["opened_at"]}
        fold._pr_task = {(t, n): task for t, n, task in state["pr_task"]}
        fold._attempts_by_task.update(
            ((t, k), [tuple(a) for a in v]) for t, k, v in state["attempts_by_task"]
        )
        return fold

    def _row(self, target_id: str, day: str) -> TargetDayMetrics:
        return self._rows.setdefault((target_id, day), TargetDayMetrics(target_id, day))

    def _apply_one(self, stored: StoredEvent) -> None:
        if fold_anomaly(stored) is not None:
            return  # malformed: reported by fold_anomaly, never counted
        kind, payload, at = stored.event_type, stored.payload, stored.event.timestamp
        target_id = payload.get("target_id")
        if not target_id:
            return
        day = at[:10]
        if kind in ENDED:
            tokens = usage_tokens(payload)
            self._attempts_by_task[(target_id, payload.get("task_id", ""))].append((at, tokens))
            metrics = self._row(target_id, day)
            metrics.attempts += 1
            if tokens is not None:
                metrics.tokens = (metrics.tokens or 0) + tokens
            if kind == ev.ATTEMPT_SUCCEEDED:
                metrics.succeeded += 1
            else:
                metrics.failed += 1
                self._failures[(target_id, day)][payload.get("failure_type") or "unknown"] += 1
        elif kind == ev.PR_CREATED:
            key = (target_id, int(payload["pr_number"]))
            self._opened_at.setdefault(key, at)
            self._pr_task.setdefault(key, payload.get("task_id", ""))
            self._row(target_id, day).prs_opened += 1
        elif kind in (ev.PR_MERGED, ev.PR_CLOSED):
            key = (target_id, int(payload["pr_number"]))
            if kind == ev.PR_CLOSED:
                self._row(target_id, day).prs_closed += 1
                return
            self._row(target_id, day).prs_merged += 1
            if key in self._opened_at:
                seconds = (parse_timestamp(at) - parse_timestamp(self._opened_at[key])).total_seconds()
                self._merge_times[(target_id, day)].append(seconds)
            task_id = self._pr_task.get(key) or (payload.get("task") or "").partition("/")[2]
            self._merged_tasks[(target_id, day)].append((task_id, at))


def _finish(
    metrics: TargetDayMetrics,
    failures: Counter,
    merge_times: list[float],
    merged: list[tuple[str, str]],
    attempts_by_task: dict[tuple[str, str], list[tuple[str, int | None]]],
) -> None:
    if metrics.attempts:
        metrics.success_rate = round(metrics.succeeded / metrics.attempts, 4)
    metrics.failures_by_type = dict(sorted(failures.items()))
    if merge_times:
        metrics.median_time_to_merge_seconds = round(median(merge_times), 3)
        metrics.mean_time_to_merge_seconds = round(mean(merge_times), 3)
    if not merged:
        return
    per_pr_attempts, per_pr_tokens = [], []
    for task_id, merged_at in merged:
        before = [t for at, t in attempts_by_task[(metrics.target_id, task_id)] if at <= merged_at]
        per_pr_attempts.append(len(before))
        counted = [t for t in before if t is not None]
        if counted:
            per_pr_tokens.append(sum(counted))
    metrics.attempts_per_merged_pr = round(mean(per_pr_attempts), 3)
    if per_pr_tokens:
        metrics.tokens_per_merged_pr = round(sum(per_pr_tokens) / len(merged), 1)


def metrics_table_rows(metrics: dict[str, TargetDayMetrics]) -> list[list[object]]:
    """One row per target for a Markdown table (see ``METRICS_HEADERS``)."""

    def show(value: object) -> object:
        return "—" if value is None else value

    return [
        [
            m.target_id,
            m.attempts,
            show(m.success_rate),
            ", ".join(f"{k}: {v}" for k, v in m.failures_by_type.items()) or "—",
            m.prs_opened,
            m.prs_merged,
            m.prs_closed,
            show(m.median_time_to_merge_seconds),
            show(m.attempts_per_merged_pr),
            show(m.tokens_per_merged_pr),
        ]
        for m in metrics.values()
    ]


METRICS_HEADERS = [
    "target",
    "attempts",
    "success rate",
    "failures by type",
    "PRs opened",
    "merged",
    "closed",
    "median time to merge (s)",
    "attempts / merged PR",
    "tokens / merged PR",
]
