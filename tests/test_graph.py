"""The graph projection, folded from a real NDJSON event log."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import rfc8785

from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.events.model import Event
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.projections.graph import GraphProjection

ACTOR = "test"
AT = datetime(2026, 1, 24, 10, 0, tzinfo=UTC)


def artifacts(*names: str) -> list[dict]:
    return [{"name": n, "sha256": f"{i:064x}", "bytes": 10 * i} for i, n in enumerate(names, start=1)]


def ids(target: str, task: str, attempt: str) -> dict:
    return {"target_id": target, "task_id": task, "attempt_id": attempt}


def scenario() -> list[list[Event]]:
    """Bundles as producers write them: a failed attempt, a retried one that opens a merged PR, a
    second target whose PR is closed and whose circuit opens, and events the graph does not know."""
    one, two, three = (
        ids("site", "intro", "attempt-1"),
        ids("site", "intro", "attempt-2"),
        ids("api", "x", "a-3"),
    )
    return [
        [
            lifecycle.attempt_created(
                **one,
                attempt_number=1,
                branch_name="agent/intro-attempt-1",
                executor="local",
                actor_id=ACTOR,
                at=AT,
            )
        ],
        [lifecycle.attempt_started(**one, actor_id=ACTOR)],
        [
            lifecycle.attempt_failed(
                **one,
                failure_type="tests_failed",
                error_summary="boom",
                actor_id=ACTOR,
                attempt_number=1,
                artifacts=artifacts("tests.log", "worker.log"),
            )
        ],
        [
            lifecycle.attempt_created(
                **two,
                attempt_number=2,
                branch_name="agent/intro-attempt-2",
                executor="local",
                actor_id=ACTOR,
                at=AT,
            ),
            lifecycle.attempt_started(**two, actor_id=ACTOR),
        ],
        [
            lifecycle.pr_created(
                **two,
                pr_number=1,
                pr_url="file:///pulls/1",
                branch_name="agent/intro-attempt-2",
                actor_id=ACTOR,
            ),
            lifecycle.attempt_succeeded(
                **two,
                actor_id=ACTOR,
                attempt_number=2,
                commit_sha="c0ffee",
                artifacts=artifacts("diff.patch"),
            ),
        ],
        [
            lifecycle.pr_finished(
                kind="pr.merged", target_id="site", pr_number=1, task_ref="site/intro", actor_id=ACTOR
            )
        ],
        [lifecycle.task_completed(target_id="site", task_id="intro", status="completed", actor_id=ACTOR)],
        # Worker events without a scheduler's attempt.created: the attempt node still appears.
        [lifecycle.attempt_started(**three, actor_id=ACTOR)],
        [lifecycle.pr_created(**three, pr_number=7, pr_url="u", branch_name="b", actor_id=ACTOR)],
        [
            lifecycle.pr_finished(
                kind="pr.closed", target_id="api", pr_number=7, task_ref="api/x", actor_id=ACTOR
            )
        ],
        [lifecycle.circuit_opened(target_id="api", consecutive_failures=2, threshold=2, actor_id=ACTOR)],
        [Event.new("dagster.run.started", {"run_id": "r1"}, actor_id=ACTOR)],
        [Event.new("attempt.started", {"note": "no ids: skipped"}, actor_id=ACTOR)],
    ]


@pytest.fixture
def log(tmp_path: Path) -> NdjsonEventLog:
    store = NdjsonEventLog(tmp_path / "events.ndjson")
    for bundle in scenario():
        store.append(bundle)
    return store


def test_two_rebuilds_from_the_same_log_are_byte_identical(log: NdjsonEventLog) -> None:
    first = GraphProjection.from_events(log.read()).to_json()
    reopened = NdjsonEventLog(log.path)
    assert GraphProjection.from_events(reopened.read()).to_json() == first
    # Canonical JSON: re-canonicalising the parsed document gives the same bytes.
    assert rfc8785.dumps(json.loads(first)) == first


@pytest.mark.parametrize("step", [1, 2, 3, 5])
def test_incremental_rebuild_equals_full_rebuild(log: NdjsonEventLog, step: int) -> None:
    full = GraphProjection.from_events(log.read())
    incremental = GraphProjection()
    head, _ = log.head()
    for after in range(0, head, step):
        events = [e for e in log.read(after_seq=after) if e.seq <= after + step]
        assert incremental.apply(events) == len(events)
    assert incremental.last_seq == head
    assert incremental.to_json() == full.to_json()


def test_every_node_and_edge_kind(log: NdjsonEventLog) -> None:
    graph = GraphProjection.from_events(log.read())
    nodes = graph.nodes
    assert nodes["target:site"]["type"] == "Target" and nodes["target:api"]["circuit"] == "open"
    assert nodes["task:site/intro"]["status"] == "completed"
    first, second = nodes["attempt:attempt-1"], nodes["attempt:attempt-2"]
    assert (first["status"], first["failure_type"], first["attempt_number"]) == ("failed", "tests_failed", 1)
    assert first["branch_name"] == "agent/intro-attempt-1" and first["error_summary"] == "boom"
    assert second["status"] == "succeeded" and second["commit_sha"] == "c0ffee" and second["started_at"]
    assert nodes["attempt:a-3"]["status"] == "running"
    artifact = nodes["artifact:attempt-1/tests.log"]
    assert (artifact["type"], artifact["sha256"], artifact["bytes"]) == ("Artifact", f"{1:064x}", 10)
    assert nodes["pr:site/1"]["state"] == "merged" and nodes["pr:site/1"]["pr_url"] == "file:///pulls/1"
    assert nodes["pr:api/7"]["state"] == "closed"
    assert {
        ("task:site/intro", "DEPENDS_ON", "target:site"),
        ("attempt:attempt-1", "DEPENDS_ON", "task:site/intro"),
        ("attempt:attempt-2", "DEPENDS_ON", "task:site/intro"),
        ("attempt:attempt-1", "PRODUCED", "artifact:attempt-1/tests.log"),
        ("attempt:attempt-1", "PRODUCED", "artifact:attempt-1/worker.log"),
        ("attempt:attempt-2", "PRODUCED", "artifact:attempt-2/diff.patch"),
        ("attempt:attempt-2", "PRODUCED", "pr:site/1"),
        ("attempt:a-3", "PRODUCED", "pr:api/7"),
        ("task:api/x", "DEPENDS_ON", "target:api"),
        ("attempt:a-3", "DEPENDS_ON", "task:api/x"),
    } == graph.edges
    assert {n["type"] for n in nodes.values()} == {"Target", "Task", "Attempt", "Artifact", "PullRequest"}


def test_summary_counts_by_type_and_status(log: NdjsonEventLog) -> None:
    summary = GraphProjection.from_events(log.read()).summary()
    assert summary["last_seq"] == log.head()[0]
    assert summary["nodes"] == {"Target": 2, "Task": 2, "Attempt": 3, "Artifact": 3, "PullRequest": 2}
    assert summary["status"]["Attempt"] == {"failed": 1, "running": 1, "succeeded": 1}
    assert summary["status"]["PullRequest"] == {"closed": 1, "merged": 1}
    assert summary["edges"] == {"DEPENDS_ON": 5, "PRODUCED": 5}


def test_replayed_events_do_not_duplicate_or_change_anything(log: NdjsonEventLog) -> None:
    graph = GraphProjection.from_events(log.read())
    before = graph.to_json()
    assert graph.apply(log.read()) == 0  # seq <= last_seq: already applied
    assert graph.to_json() == before

    # The same facts logged again under new ids (a producer that retried with fresh events): the first
    # create and the terminal state win, and no node or edge is added.
    two = ids("site", "intro", "attempt-2")
    log.append(
        [
            Event.new("attempt.created", {**two, "attempt_number": 9, "branch_name": "o"}, actor_id="again"),
            Event.new("attempt.failed", {**two, "failure_type": "timeout"}, actor_id="again"),
            Event.new("pr.created", {**two, "pr_number": 1, "pr_url": "changed"}, actor_id="again"),
            Event.new("pr.closed", {"target_id": "site", "pr_number": 1}, actor_id="again"),
        ]
    )
    graph.apply(log.read(after_seq=graph.last_seq))
    again = graph.to_dict()
    assert again["last_seq"] == log.head()[0]
    old = json.loads(before)
    assert len(again["nodes"]) == len(old["nodes"]) and again["edges"] == old["edges"]
    nodes = graph.nodes
    assert nodes["attempt:attempt-2"]["status"] == "succeeded"
    assert nodes["attempt:attempt-2"]["attempt_number"] == 2
    assert nodes["pr:site/1"]["state"] == "merged" and nodes["pr:site/1"]["pr_url"] == "file:///pulls/1"


def test_a_cleared_escalation_makes_the_task_active_again(tmp_path: Path) -> None:
    store = NdjsonEventLog(tmp_path / "events.ndjson")
    store.append([lifecycle.task_escalated(target_id="site", task_id="t", failures=3, actor_id=ACTOR)])
    assert GraphProjection.from_events(store.read()).nodes["task:site/t"]["status"] == "escalated"
    cleared = {"target_id": "site", "task_id": "t", "cleared": "escalated", "reason": "fixed"}
    store.append([Event.new("task.escalation_cleared", cleared, actor_id="operator:ada")])
    task = GraphProjection.from_events(store.read()).nodes["task:site/t"]
    assert (task["status"], task["updated_seq"]) == ("active", 2)
