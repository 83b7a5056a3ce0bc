"""One schema per event type: the door refuses what does not match, and a malformed event already in a
log (written before validation existed, or straight into the store) is an anomaly, never a crash."""

from __future__ import annotations

import json
import logging
import re
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import Project, backlog_yaml, docs_task, make_project

from leviathan_dagster.cli.main import cli
from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.attempts.details import terminal_payload
from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.events.model import Event
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.events.schemas import (
    EVENT_SCHEMAS,
    TIMESTAMP_PATTERN,
    event_json_schema,
    event_problems,
)
from leviathan_dagster.core.projections.graph import GraphProjection
from leviathan_dagster.core.projections.metrics import compute_delivery_metrics

IDS = {"target_id": "site", "task_id": "a", "attempt_id": "attempt-1"}


def created() -> Event:
    return lifecycle.attempt_created(
        **IDS, attempt_number=1, branch_name="agent/a-attempt-1", executor="docs", actor_id="scheduler"
    )


def poisoned() -> list[Event]:
    """The issue's poison, each once accepted with 200 and then fatal to every later reader."""
    good = lifecycle.attempt_failed(**IDS, failure_type="tests_failed", error_summary="x", actor_id="w")
    return [
        Event("p-1", "attempt.started", "2026-01-01T00:00:00", "w", {**IDS}),  # no timezone
        Event("p-2", "attempt.failed", good.timestamp, "w", {**good.payload, "completed_at": "not-a-time"}),
        Event(
            "p-3",
            "attempt.failed",
            good.timestamp,
            "w",
            {**good.payload, "completed_at": "9999-01-01T00:00:00Z"},
        ),
        Event("p-4", "attempt.created", good.timestamp, "w", {**created().payload, "created_at": {}}),
        Event("p-5", "pr.merged", good.timestamp, "w", {"target_id": "site", "pr_number": "seven"}),
        Event("p-6", "retry.scheduled", good.timestamp, "w", {"target_id": "site"}),
    ]


def test_every_poison_of_the_issue_is_named_by_its_field() -> None:
    problems = [event_problems(event) for event in poisoned()]
    assert problems[0] == [
        "timestamp: '2026-01-01T00:00:00' is not an RFC 3339 time with an offset between 2000 "
        "and 2099 (e.g. 2026-01-31T12:00:00.000000Z)"
    ]
    assert problems[1][0].startswith("payload.completed_at: 'not-a-time'")
    assert problems[2][0].startswith("payload.completed_at: '9999-01-01T00:00:00Z'")
    assert problems[3] == ["payload.created_at: must be a string, got an object"]
    assert problems[4] == ["payload.pr_number: must be an integer, got a string"]
    assert problems[5] == [
        "payload.task_id: required for retry.scheduled",
        "payload.retry_number: required for retry.scheduled",
    ]
    assert event_problems(created()) == []


def test_the_timestamp_pattern_admits_exactly_the_real_dates() -> None:
    pattern = re.compile(TIMESTAMP_PATTERN)
    for good in ("2024-02-29T00:00:00Z", "2000-02-29T23:59:59.5+01:00", "2026-12-31T10:00:00.123456-05:30"):
        assert pattern.match(good), good
    for bad in (
        "2023-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2100-01-01T00:00:00Z",
        "1999-12-31T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01 00:00:00Z",
        "2026-01-01T00:00:00+1:00",
    ):
        assert not pattern.match(bad), bad


def test_the_published_schema_has_one_branch_per_event_type() -> None:
    branches = event_json_schema()["oneOf"]
    assert sorted(b["properties"]["event_type"]["const"] for b in branches) == sorted(EVENT_SCHEMAS)
    failed = next(b for b in branches if b["properties"]["event_type"]["const"] == "attempt.failed")
    assert failed["properties"]["payload"]["required"] == [
        "attempt_id",
        "failure_type",
        "target_id",
        "task_id",
    ]


def test_readers_skip_and_report_malformed_events_already_in_the_log(tmp_path: Path) -> None:
    store = NdjsonEventLog(tmp_path / "events.ndjson")
    store.append([created(), *poisoned()])  # straight into the store: the door is not the only writer
    events = list(store.read())
    ledger = AttemptLedger.from_events(events)
    assert ledger.attempt("attempt-1").status == "created"
    assert [a.seq for a in ledger.anomalies] == [2, 3, 4, 5, 6, 7]
    assert ledger.anomalies[1].attempt_id == "attempt-1" and ledger.anomalies[1].target_id == "site"
    graph = GraphProjection.from_events(events)
    assert graph.summary() and len(graph.anomalies) == 6
    assert compute_delivery_metrics(events, date(2026, 1, 1)) == {}
    assert terminal_payload(events, "attempt-1") == {}


@pytest.fixture
def project(tmp_path: Path) -> Project:
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"), docs_task("b"))}
    return make_project(tmp_path, {"site": {"files": files}})


def test_tasks_still_answers_after_poison_reached_the_log(project: Project) -> None:
    NdjsonEventLog(project.home.events_path).append(poisoned())
    args = ["--config", str(project.config_path), "--home", str(project.home.root), "tasks", "--json"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert '"task": "a"' in result.stdout and '"error": null' in result.stdout
    assert "Traceback" not in result.output


def test_tasks_shows_each_malformed_event_with_its_target_and_attempt(project: Project) -> None:
    stray = Event("p-7", "attempt.started", "2026-01-01T00:00:00", "w", {**IDS, "target_id": "gone"})
    NdjsonEventLog(project.home.events_path).append([*poisoned(), stray])
    base = ["--config", str(project.config_path), "--home", str(project.home.root), "tasks"]
    shown = CliRunner().invoke(cli, [*base, "--json"], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    anomalies = json.loads(shown.stdout)["site"]["anomalies"]
    assert [a["seq"] for a in anomalies] == [1, 2, 3, 4, 5, 6]
    assert anomalies[1] == {
        "seq": 2,
        "event_type": "attempt.failed",
        "problem": anomalies[1]["problem"],
        "attempt_id": "attempt-1",
        "target_id": "site",
    }
    assert anomalies[1]["problem"].startswith("payload.completed_at: 'not-a-time'")
    # Another target's (not in leviathan.yaml) is on stderr: the document keeps one key per target.
    assert set(json.loads(shown.stdout)) == {"site"}
    assert "malformed event seq 7 (attempt.started, target gone, attempt attempt-1)" in shown.stderr

    table = CliRunner().invoke(cli, base, catch_exceptions=False)
    assert table.exit_code == 0, table.output
    line = next(x for x in table.stdout.splitlines() if "seq 2" in x)
    assert line.startswith(
        "  malformed event seq 2 (attempt.failed, target site, attempt attempt-1) not folded: "
    )
    assert "payload.completed_at: 'not-a-time'" in line and "Fix: " in line


def test_the_anomaly_is_reported_once_with_its_attempt_and_target(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = NdjsonEventLog(tmp_path / "events.ndjson")
    store.append([created(), poisoned()[1]])
    caplog.set_level(logging.WARNING, logger="leviathan_dagster.core.events.schemas")
    for _ in range(3):  # every cycle folds the log again
        AttemptLedger.from_events(store.read())
    [record] = caplog.records
    assert record.getMessage().startswith(
        "event log: seq 2 (attempt.failed, target site, attempt attempt-1) is malformed and was not folded: "
        "payload.completed_at: 'not-a-time'"
    )
