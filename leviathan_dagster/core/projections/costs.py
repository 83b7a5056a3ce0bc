"""What attempts cost, per attempt and per target and UTC day, folded from the event log.

An attempt's cost is read from the ``usage`` of its terminal event (``attempt.succeeded`` or
``attempt.failed``): model calls, the four token counts and ``usd``, which the generator adds up per
call at the model's list price (``claude_prices``; Haiku 5.5's long-prompt rate applies per request, so
it cannot be recomputed from the totals afterwards). Since the worker records ``usage`` for every
attempt, a deterministic generator (docs, tests) shows an explicit zero. What the log cannot say is
kept apart rather than guessed:

- an attempt whose terminal event has no ``usage`` (written by the orchestrator for a worker that died,
  or by an older worker) counts as an attempt with ``unrecorded`` usage, its tokens and cost unknown;
- model calls to a model without a list price count their tokens but no dollars, as ``unpriced``.

Pure: the same events give the same numbers; a day counts the attempts that *ended* that day.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date

from leviathan_dagster.core.events import model as ev
from leviathan_dagster.core.events.model import StoredEvent
from leviathan_dagster.core.events.schemas import fold_anomaly
from leviathan_dagster.core.generators.usage import TOKEN_FIELDS

ENDED = (ev.ATTEMPT_SUCCEEDED, ev.ATTEMPT_FAILED)
# The generator of an attempt whose terminal event does not name it (older logs, a worker that died
# before it read the task).
UNKNOWN_GENERATOR = "unknown"


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


@dataclass(frozen=True)
class AttemptCost:
    """One attempt's usage. ``usd`` is None when it is not known: no usage recorded, or calls to a
    model without a list price; ``recorded`` says whether the terminal event carried ``usage``."""

    generator: str
    recorded: bool
    model: str | None = None
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    usd: float | None = None

    @property
    def total_tokens(self) -> int:
        return sum(getattr(self, name) for name in TOKEN_FIELDS)

    @property
    def unpriced(self) -> bool:
        return self.recorded and self.usd is None


def attempt_cost(usage: object, generator: object = None) -> AttemptCost:
    """The cost of an attempt from its ``usage`` (the terminal event's, or ``AttemptRecord.usage``)
    and the generator its terminal event names (else its usage's ``generator``)."""
    if not (isinstance(generator, str) and generator) and isinstance(usage, dict):
        generator = usage.get("generator")  # a failed attempt's event names it only in its usage
    name = generator if isinstance(generator, str) and generator else UNKNOWN_GENERATOR
    if not isinstance(usage, dict):
        return AttemptCost(generator=name, recorded=False)
    calls = _count(usage.get("calls"))
    usd = usage.get("usd")
    if isinstance(usd, int | float) and not isinstance(usd, bool):
        usd = float(usd)
    else:
        # No model call costs nothing; calls without ``usd`` were to a model without a price.
        usd = 0.0 if calls == 0 else None
    model = usage.get("model")
    return AttemptCost(
        generator=name,
        recorded=True,
        model=model if isinstance(model, str) and model else None,
        calls=calls,
        usd=usd,
        **{token: _count(usage.get(token)) for token in TOKEN_FIELDS},
    )


@dataclass
class TargetDayCost:
    """What one target's attempts that ended on one UTC day cost."""

    target_id: str
    day: str
    attempts: int = 0
    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    usd: float = 0.0
    unpriced_attempts: int = 0
    unrecorded_attempts: int = 0
    attempts_by_generator: dict[str, int] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return sum(getattr(self, name) for name in TOKEN_FIELDS)

    def add(self, cost: AttemptCost) -> None:
        self.attempts += 1
        self.attempts_by_generator[cost.generator] = self.attempts_by_generator.get(cost.generator, 0) + 1
        if not cost.recorded:
            self.unrecorded_attempts += 1
            return
        self.model_calls += cost.calls
        for name in TOKEN_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(cost, name))
        if cost.usd is None:
            self.unpriced_attempts += 1
        else:
            self.usd = round(self.usd + cost.usd, 6)

    def as_dict(self) -> dict[str, object]:
        return {
            "target_id": self.target_id,
            "day": self.day,
            "attempts": self.attempts,
            "attempts_by_generator": dict(sorted(self.attempts_by_generator.items())),
            "model_calls": self.model_calls,
            **{name: getattr(self, name) for name in TOKEN_FIELDS},
            "total_tokens": self.total_tokens,
            "usd": self.usd,
            "unpriced_attempts": self.unpriced_attempts,
            "unrecorded_attempts": self.unrecorded_attempts,
        }


class CostFold:
    """Per (target, UTC day) costs, folded incrementally (a projection of ``LogView``)."""

    def __init__(self) -> None:
        self.last_seq = 0
        self._rows: dict[tuple[str, str], TargetDayCost] = {}
        # Only the first terminal event of an attempt counts (the one the ledger keeps).
        self._ended: set[str] = set()

    # Bump when to_state/from_state change shape (core/projections/snapshots.py).
    STATE_VERSION = 1

    def to_state(self) -> dict:
        return {
            "last_seq": self.last_seq,
            "rows": [asdict(row) for row in self._rows.values()],
            "ended": sorted(self._ended),
        }

    @classmethod
    def from_state(cls, state: dict) -> CostFold:
        fold = cls()
        fold.last_seq = state["last_seq"]
        fold._rows = {(row["target_id"], row["day"]): TargetDayCost(**row) for row in state["rows"]}
        fold._ended = set(state["ended"])
        return fold

    def apply(self, events: Iterable[StoredEvent]) -> None:
        for stored in events:
            self._apply_one(stored)
            self.last_seq = stored.seq

    def _apply_one(self, stored: StoredEvent) -> None:
        if stored.event_type not in ENDED or fold_anomaly(stored) is not None:
            return
        payload = stored.payload
        attempt_id, target_id = payload["attempt_id"], payload["target_id"]
        if attempt_id in self._ended:
            return
        self._ended.add(attempt_id)
        day = stored.event.timestamp[:10]
        row = self._rows.setdefault((target_id, day), TargetDayCost(target_id, day))
        row.add(attempt_cost(payload.get("usage"), payload.get("generator")))

    def costs_for(self, day: date) -> dict[str, TargetDayCost]:
        """The costs of ``day`` per target with an attempt that ended that day (copies, by target)."""
        stamp = day.isoformat()
        return {t: _copy(row) for (t, d), row in sorted(self._rows.items()) if d == stamp}

    def days(self, first: date | None = None, last: date | None = None) -> list[TargetDayCost]:
        """Every (target, day) row between ``first`` and ``last`` (inclusive), by day then target."""
        low, high = (first.isoformat() if first else ""), (last.isoformat() if last else "9999")
        rows = [row for (_, d), row in self._rows.items() if low <= d <= high]
        return [_copy(row) for row in sorted(rows, key=lambda r: (r.day, r.target_id))]


def _copy(row: TargetDayCost) -> TargetDayCost:
    return TargetDayCost(**{**row.__dict__, "attempts_by_generator": dict(row.attempts_by_generator)})


def compute_costs(events: Iterable[StoredEvent], day: date) -> dict[str, TargetDayCost]:
    """:meth:`CostFold.costs_for` over ``events`` in one pass."""
    fold = CostFold()
    fold.apply(events)
    return fold.costs_for(day)


def sum_costs(rows: Iterable[TargetDayCost]) -> TargetDayCost:
    """The rows added up (its ``target_id`` and ``day`` are empty)."""
    total = TargetDayCost("", "")
    for row in rows:
        total.attempts += row.attempts
        total.model_calls += row.model_calls
        for name in TOKEN_FIELDS:
            setattr(total, name, getattr(total, name) + getattr(row, name))
        total.usd = round(total.usd + row.usd, 6)
        total.unpriced_attempts += row.unpriced_attempts
        total.unrecorded_attempts += row.unrecorded_attempts
        for name, count in row.attempts_by_generator.items():
            total.attempts_by_generator[name] = total.attempts_by_generator.get(name, 0) + count
    return total


# USD first after the counts: a wide table is cut at the right edge of the UI's metadata column.
COST_HEADERS = [
    "day",
    "target",
    "attempts",
    "USD",
    "total tokens",
    "by generator",
    "model calls",
    "input",
    "output",
    "cache write",
    "cache read",
]


def cost_table_rows(rows: Iterable[TargetDayCost]) -> list[list[object]]:
    """One row per (target, day) for a Markdown table (see ``COST_HEADERS``)."""
    return [
        [
            row.day,
            row.target_id,
            row.attempts,
            usd_cell(row),
            row.total_tokens,
            ", ".join(f"{k}: {v}" for k, v in sorted(row.attempts_by_generator.items())),
            row.model_calls,
            row.input_tokens,
            row.output_tokens,
            row.cache_creation_input_tokens,
            row.cache_read_input_tokens,
        ]
        for row in rows
    ]


def usd_cell(row: TargetDayCost) -> str:
    """``$0.1234``, with what it leaves out: attempts without a price or without recorded usage."""
    text = f"${row.usd:.4f}"
    gaps = [
        f"{n} {what}"
        for n, what in ((row.unpriced_attempts, "unpriced"), (row.unrecorded_attempts, "unrecorded"))
        if n
    ]
    return f"{text} (+ {', '.join(gaps)})" if gaps else text
