"""Realistic event-log histories, appended fast: attempt lifecycles with PR merges and closes.

Each finished task of the past is a run of attempts: ``attempt.created``, ``attempt.started``,
``pr.created``, ``attempt.succeeded``, then ``pr.merged`` + ``task.completed`` (most PRs) or
``pr.closed`` + ``retry.scheduled`` and another attempt (``close_ratio`` of them), with a failed
attempt (tests_failed + retry) now and then. Tasks are named ``hist-<n>``, so they never collide with
a live backlog's tasks; timestamps step back from ``end`` so the history spans many days. Events go in
bundles of ``BUNDLE`` (one append each), which is how a year of real appends would look on disk.

Used by ``bench_history.py`` and by the tests that check projections against a full fold.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from leviathan_dagster.core.attempts.ledger import branch_name_for, make_attempt_id
from leviathan_dagster.core.events import model as ev
from leviathan_dagster.core.events.model import Event, format_timestamp
from leviathan_dagster.core.events.store import EventStore

BUNDLE = 1000
_STEP = timedelta(seconds=40)


def history_events(
    count: int,
    targets: tuple[str, ...] = ("site",),
    *,
    close_ratio: float = 0.1,
    fail_ratio: float = 0.1,
    end: datetime | None = None,
    seed: int = 14,
) -> Iterator[Event]:
    """About ``count`` events (whole task histories, so a few more), oldest first."""
    rng = random.Random(seed)
    end = end or datetime.now(UTC) - timedelta(days=1)
    moment = end - _STEP * count
    produced, task_no = 0, 0
    pr_numbers = dict.fromkeys(targets, 0)
    while produced < count:
        task_no += 1
        target = targets[task_no % len(targets)]
        task_id = f"hist-{task_no}"
        number = 0
        while True:
            number += 1
            attempt_id = make_attempt_id(target, task_id, number)
            ids = {"attempt_id": attempt_id, "target_id": target, "task_id": task_id}
            branch = branch_name_for(task_id, attempt_id)
            events: list[tuple[str, dict]] = [
                (
                    ev.ATTEMPT_CREATED,
                    {**ids, "attempt_number": number, "branch_name": branch, "executor": "local"},
                ),
                (ev.ATTEMPT_STARTED, {**ids, "status": "running"}),
            ]
            usage = {"model": "claude-sonnet-4-6", "calls": 3, "total_tokens": rng.randint(2000, 9000)}
            if rng.random() < fail_ratio:
                failed = {**ids, "failure_type": "tests_failed", "error_summary": "1 test failed"}
                events.append((ev.ATTEMPT_FAILED, {**failed, "usage": usage}))
                retry = {"target_id": target, "task_id": task_id, "retry_number": number + 1}
                events.append((ev.RETRY_SCHEDULED, {**retry, "backoff_seconds": 60}))
                produced += yield from _emit(events, moment)
                moment += _STEP * len(events)
                continue
            pr_numbers[target] += 1
            pr = pr_numbers[target]
            pr_url = f"file:///forge/{target}/pulls/{pr}"
            events.append((ev.PR_CREATED, {**ids, "pr_number": pr, "pr_url": pr_url, "branch_name": branch}))
            done = {**ids, "branch_name": branch, "commit_sha": f"{task_no:040x}", "pr_number": pr}
            events.append((ev.ATTEMPT_SUCCEEDED, {**done, "pr_url": pr_url, "usage": usage}))
            ref = f"{target}/{task_id}"
            if rng.random() < close_ratio and number < 3:
                events.append((ev.PR_CLOSED, {"target_id": target, "pr_number": pr, "task": ref}))
                retry = {"target_id": target, "task_id": task_id, "retry_number": number + 1}
                events.append((ev.RETRY_SCHEDULED, {**retry, "backoff_seconds": 60}))
                produced += yield from _emit(events, moment)
                moment += _STEP * len(events)
                continue
            events.append((ev.PR_MERGED, {"target_id": target, "pr_number": pr, "task": ref}))
            done_task = {"target_id": target, "task_id": task_id, "status": "completed", "pr_number": pr}
            events.append((ev.TASK_COMPLETED, done_task))
            produced += yield from _emit(events, moment)
            moment += _STEP * len(events)
            break


def _emit(events: list[tuple[str, dict]], moment: datetime) -> Iterator[Event]:
    for offset, (kind, payload) in enumerate(events):
        at = moment + _STEP * offset
        stamp = format_timestamp(at)
        if kind == ev.ATTEMPT_CREATED:
            payload = {**payload, "created_at": stamp}
        elif kind == ev.ATTEMPT_STARTED:
            payload = {**payload, "started_at": stamp}
        elif kind in (ev.ATTEMPT_SUCCEEDED, ev.ATTEMPT_FAILED):
            payload = {**payload, "completed_at": stamp}
        yield Event.new(kind, payload, actor_id="history", at=at)
    return len(events)


def append_history(store: EventStore, count: int, **options) -> int:
    """Append about ``count`` history events to ``store`` in bundles; returns the log's last seq."""
    bundle: list[Event] = []
    for event in history_events(count, **options):
        bundle.append(event)
        if len(bundle) >= BUNDLE:
            store.append(bundle)
            bundle = []
    if bundle:
        store.append(bundle)
    return store.head()[0]
