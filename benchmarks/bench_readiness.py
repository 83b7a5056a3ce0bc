"""How long does one scheduler decision take over a large fleet?

    python benchmarks/bench_readiness.py

Builds 100 targets with 1,000 tasks each (dependencies on up to two earlier tasks, a share of them
completed, a few out of scope or not ready), writes a few thousand attempt lifecycle events to a real
NDJSON log in a temporary directory and folds them into the ledger, gives every target open pull
requests, then times ``evaluate_target`` for every target plus ``select_across_targets`` (best and
median of 3, and the first on its own: it fills the path-normalisation caches a long-lived sensor
process keeps between ticks). Goal: under 1 s. Building the inputs is timed separately; peak memory
comes from tracemalloc in a pass of its own, so its overhead does not inflate the timings.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

# Run as a plain script from a checkout: make the package importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leviathan_dagster.core.attempts import lifecycle  # noqa: E402
from leviathan_dagster.core.attempts.ledger import (  # noqa: E402
    INFRASTRUCTURE,
    TESTS_FAILED,
    AttemptLedger,
    branch_name_for,
    make_attempt_id,
)
from leviathan_dagster.core.attempts.markers import render_task_marker  # noqa: E402
from leviathan_dagster.core.events.model import Event, format_timestamp  # noqa: E402
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog  # noqa: E402
from leviathan_dagster.core.gc_pause import collector_paused  # noqa: E402
from leviathan_dagster.core.models import Backlog, Policy, PullRequest, TargetConfig, Task  # noqa: E402
from leviathan_dagster.core.scheduling.readiness import Readiness, evaluate_target, select_across_targets  # noqa: E402

TARGETS = 100
TASKS_PER_TARGET = 1_000
ATTEMPTED_TASKS_PER_TARGET = 12  # each with one or two attempts: a few thousand events in all
REPEATS = 3
MAX_CONCURRENT = 100
NOW = datetime(2025, 3, 2, 12, 0, tzinfo=UTC)
POLICY = Policy(
    max_open_prs=3,
    max_running_attempts=2,
    max_attempts_per_task=2,
    backoff_seconds=3600,
    circuit_breaker_failures=4,
)


def make_backlog(rng: random.Random, target_id: str) -> Backlog:
    tasks = []
    for i in range(TASKS_PER_TARGET):
        earlier = rng.sample(range(i), k=min(i, rng.randint(0, 2)))
        roll = rng.random()
        tasks.append(
            Task(
                id=f"task-{i:04d}",
                title=f"Task {i} of {target_id}",
                ready=roll > 0.05,
                allowed_paths=("src/app.py",) if roll > 0.98 else (f"docs/{target_id}/page-{i}.md",),
                status="completed" if roll < 0.35 else ("blocked" if roll < 0.37 else "pending"),
                dependencies=tuple(f"task-{j:04d}" for j in earlier),
                priority=rng.randint(1, 5),
            )
        )
    return Backlog(source=f"{target_id}:.leviathan/backlog.yaml", tasks=tuple(tasks))


def make_attempt_events(rng: random.Random, target_id: str) -> list[Event]:
    events: list[Event] = []
    for task_index in rng.sample(range(TASKS_PER_TARGET), ATTEMPTED_TASKS_PER_TARGET):
        task_id = f"task-{task_index:04d}"
        for number in range(1, rng.randint(1, 2) + 1):
            attempt_id = make_attempt_id(target_id, task_id, number)
            ids = {"attempt_id": attempt_id, "target_id": target_id, "task_id": task_id, "actor_id": "bench"}
            start = NOW - timedelta(minutes=rng.randint(1, 600))
            events.append(
                lifecycle.attempt_created(
                    **ids,
                    attempt_number=number,
                    branch_name=branch_name_for(task_id, attempt_id),
                    executor="local",
                    run_id=f"run-{attempt_id}",
                    at=start,
                )
            )
            roll = rng.random()
            if roll < 0.03:
                continue  # still in flight
            events.append(lifecycle.attempt_started(**ids))
            end = format_timestamp(start + timedelta(minutes=3))
            if roll < 0.5:
                events.append(lifecycle.attempt_succeeded(**ids, completed_at=end, commit_sha="0" * 40))
            else:
                failure = INFRASTRUCTURE if roll < 0.6 else TESTS_FAILED
                events.append(
                    lifecycle.attempt_failed(**ids, failure_type=failure, error_summary="x", completed_at=end)
                )
    return events


def make_open_prs(rng: random.Random, target_id: str) -> tuple[PullRequest, ...]:
    prs = []
    for number, task_index in enumerate(rng.sample(range(TASKS_PER_TARGET), 2), start=1):
        task_id = f"task-{task_index:04d}"
        prs.append(
            PullRequest(
                target_id=target_id,
                number=number,
                title=f"Do {task_id}",
                body=f"Generated.\n\n{render_task_marker(target_id, task_id)}\n",
                head=branch_name_for(task_id, make_attempt_id(target_id, task_id, 1)),
                base="main",
                state="open",
                created_at=format_timestamp(NOW),
                url=f"https://forge.example/{target_id}/pull/{number}",
            )
        )
    prs.append(
        PullRequest(
            target_id, 99, "Human change", "", "feature/manual", "main", "open", format_timestamp(NOW), "u"
        )
    )
    return tuple(prs)


def decide(targets, backlogs, ledger, prs) -> tuple[list[Readiness], dict[str, list[Readiness]]]:  # type: ignore[no-untyped-def]
    # As plan_cycle runs it: with the cyclic collector paused for the burst (core/gc_pause.py).
    with collector_paused():
        return _decide(targets, backlogs, ledger, prs)


def _decide(targets, backlogs, ledger, prs) -> tuple[list[Readiness], dict[str, list[Readiness]]]:  # type: ignore[no-untyped-def]
    evaluations = {t.id: evaluate_target(t, backlogs[t.id], ledger, prs[t.id], NOW) for t in targets}
    return select_across_targets(
        evaluations,
        max_concurrent=MAX_CONCURRENT,
        running_total=sum(len(ledger.running(t.id)) for t in targets),
        last_attempt_at={t.id: ledger.target(t.id).last_attempt_at for t in targets},
    )


def mib(size: int) -> float:
    return size / (1 << 20)


def main() -> None:
    rng = random.Random(20250302)
    targets = [
        TargetConfig(f"target-{i:03d}", f"file:///repos/{i}.git", policy=POLICY) for i in range(TARGETS)
    ]

    start = time.perf_counter()
    backlogs = {t.id: make_backlog(rng, t.id) for t in targets}
    prs = {t.id: make_open_prs(rng, t.id) for t in targets}
    events = [event for t in targets for event in make_attempt_events(rng, t.id)]
    build_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="bench-readiness-") as tmp:
        log = NdjsonEventLog(Path(tmp) / "events.ndjson")
        start = time.perf_counter()
        log.append(events)
        append_s = time.perf_counter() - start
        start = time.perf_counter()
        ledger = AttemptLedger.from_events(log.read())
        fold_s = time.perf_counter() - start

    tasks = TARGETS * TASKS_PER_TARGET
    timings = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        selected, limited = decide(targets, backlogs, ledger, prs)
        timings.append(time.perf_counter() - start)

    tracemalloc.start()
    decide(targets, backlogs, ledger, prs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    ready = sum(r.ready for results in limited.values() for r in results)
    reasons: dict[str, int] = {}
    for results in limited.values():
        for r in results:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
    best, median = min(timings), statistics.median(timings)
    print(f"targets             {TARGETS}")
    print(f"tasks               {tasks:,}")
    print(f"events              {len(events):,}  ({len(ledger.attempts()):,} attempts)")
    print(f"build inputs        {build_s:.2f} s (backlogs, PRs, events in memory)")
    print(
        f"append + fold       {append_s:.2f} s append to NDJSON, {fold_s:.2f} s read and fold into the ledger"
    )
    print(
        f"decide seconds      best {best:.3f} s, median {median:.3f} s (evaluate all targets + select); "
        f"first {timings[0]:.3f} s (cold path caches)"
    )
    print(f"tasks/second        best {tasks / best:,.0f}, median {tasks / median:,.0f}")
    print(f"peak memory         {mib(peak):.1f} MiB during one decision (tracemalloc)")
    print(f"selected            {len(selected)} attempts; {ready} tasks ready after the global limit")
    print("reasons             " + ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items())))


if __name__ == "__main__":
    main()
