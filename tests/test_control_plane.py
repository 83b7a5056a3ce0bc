"""The control plane API through Starlette's TestClient, over a real NDJSON event log."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.exceptions import StarletteDeprecationWarning
from starlette.routing import Route
from support import backlog_yaml, docs_task, make_project, run_worker

from leviathan_dagster.control_plane import create_app
from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.errors import ConfigError, ConflictError, LeviathanError, TransientError
from leviathan_dagster.core.events.access import Principal, mint_worker_token
from leviathan_dagster.core.events.model import Event, format_timestamp, utc_now
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from worker.event_sink import ControlPlaneSink

# Starlette 1.x prefers the httpx2 fork for its TestClient and warns (an error here) when only httpx,
# our declared dev dependency, is installed. The client works the same with either.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IDS = {"target_id": "site", "task_id": "intro", "attempt_id": "attempt-1"}
PROTECTED = [
    ("POST", "/v1/events/ingest"),
    ("GET", "/v1/events"),
    ("GET", "/v1/graph/summary"),
    ("GET", "/v1/attempts/attempt-1"),
    ("GET", "/v1/autonomy/status"),
    ("GET", "/openapi.json"),
]


def created(attempt_id: str = "attempt-1", number: int = 1, task_id: str = "intro") -> Event:
    return lifecycle.attempt_created(
        target_id="site",
        task_id=task_id,
        attempt_id=attempt_id,
        attempt_number=number,
        branch_name=f"agent/{task_id}-{attempt_id}",
        executor="local",
        actor_id="scheduler",
    )


def started(attempt_id: str = "attempt-1", task_id: str = "intro") -> Event:
    return lifecycle.attempt_started(target_id="site", task_id=task_id, attempt_id=attempt_id, actor_id="w")


def failed(attempt_id: str, task_id: str = "intro") -> Event:
    ids = {"target_id": "site", "task_id": task_id, "attempt_id": attempt_id}
    return lifecycle.attempt_failed(**ids, failure_type="tests_failed", error_summary="boom", actor_id="w")


def bundle(*events: Event, bundle_id: str = "b-1", target: str = "site") -> dict[str, Any]:
    return {"target": target, "bundle_id": bundle_id, "events": [e.body() for e in events], "artifacts": []}


@pytest.fixture
def store(tmp_path: Path) -> NdjsonEventLog:
    return NdjsonEventLog(tmp_path / "cp" / "events.ndjson")


@pytest.fixture
def client(store: NdjsonEventLog) -> TestClient:
    return TestClient(create_app(store, token=TOKEN))


def ingest(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post("/v1/events/ingest", json=body, headers=AUTH)


# -- ingest ------------------------------------------------------------------------------------------


def test_ingest_appends_the_bundle_in_one_call(
    client: TestClient, store: NdjsonEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_append = store.append
    monkeypatch.setattr(store, "append", lambda events: calls.append(len(events)) or real_append(events))
    events = [created(), started()]
    response = ingest(client, bundle(*events))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "target": "site",
        "bundle_id": "b-1",
        "seqs": [1, 2],
        "written": 2,
        "replayed": 0,
        "artifacts": 0,
    }
    assert calls == [2]  # one append: the bundle is one transaction
    assert [s.event for s in store.read()] == events


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("header", [None, "Basic czNjcmV0", "Bearer wrong-token", "Bearer "])
def test_every_protected_route_needs_the_bearer_token(
    client: TestClient, store: NdjsonEventLog, method: str, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = client.request(method, path, headers=headers, json=bundle(created()))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "token" in response.json()["error"]
    assert store.head()[0] == 0


def test_oversized_bundle_is_413_and_nothing_is_written(store: NdjsonEventLog) -> None:
    client = TestClient(create_app(store, token=TOKEN, max_bundle_bytes=300))
    body = json.dumps(bundle(created())).encode()
    assert len(body) > 300
    declared = client.post("/v1/events/ingest", content=body, headers=AUTH)
    assert declared.status_code == 413 and declared.json()["error"] == "bundle too large"
    # Chunked, without Content-Length: the limit holds on the bytes actually read.
    chunked = client.post("/v1/events/ingest", content=iter([body[:200], body[200:]]), headers=AUTH)
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413
    assert store.head()[0] == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"target": "site", "events": [', "invalid JSON"),
        (b'{"target": "site", "target": "other"}', "duplicate key 'target'"),
        (b'{"target": "site", "events": [{"payload": {"x": NaN}}]}', "NaN is not allowed"),
        (b'{"n": Infinity}', "Infinity is not allowed"),
        (b'{"target": "\xff"}', "not UTF-8"),
        (b"[" * 100_000, "invalid JSON"),
    ],
)
def test_malformed_json_is_400(client: TestClient, store: NdjsonEventLog, body: bytes, message: str) -> None:
    response = client.post("/v1/events/ingest", content=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"] == "malformed JSON" and message in response.json()["detail"]
    assert store.head()[0] == 0


def _without(data: dict, key: str) -> dict:
    return {k: v for k, v in data.items() if k != key}


SCHEMA_CASES = {
    "missing timestamp": (
        lambda b: b["events"][2].pop("timestamp"),
        "events[2].timestamp: required",
    ),
    "bad timestamp": (
        lambda b: b["events"][0].update(timestamp="yesterday"),
        "events[0].timestamp: 'yesterday'",
    ),
    # The poison: each was accepted with 200, then crashed every later reader for good.
    "timezone-less timestamp": (
        lambda b: b["events"][0].update(timestamp="2026-01-01T00:00:00"),
        "events[0].timestamp: '2026-01-01T00:00:00' is not an RFC 3339 time with an offset",
    ),
    "completed_at not a time": (
        lambda b: b["events"][2]["payload"].update(completed_at="not-a-time"),
        "events[2].payload.completed_at: 'not-a-time' is not an RFC 3339 time",
    ),
    "year 9999": (
        lambda b: b["events"][2]["payload"].update(completed_at="9999-12-31T00:00:00Z"),
        "events[2].payload.completed_at: '9999-12-31T00:00:00Z'",
    ),
    "created_at an object": (
        lambda b: b["events"][0]["payload"].update(created_at={}),
        "events[0].payload.created_at: must be a string, got an object",
    ),
    "id with a trailing newline": (
        lambda b: b["events"][0]["payload"].update(task_id="intro\n"),
        "events[0].payload.task_id: 'intro\\n' must match",
    ),
    "id of 300 characters": (
        lambda b: b["events"][0]["payload"].update(attempt_id="a" * 300),
        "events[0].payload.attempt_id:",
    ),
    "unknown event type": (
        lambda b: b["events"][1].update(event_type="attempt.teleported"),
        "events[1].event_type: 'attempt.teleported' is not a known event type",
    ),
    "payload too large": (
        lambda b: b["events"][1]["payload"].update(blob="x" * 70_000),
        "events[1].payload: about",
    ),
    "bad event type": (lambda b: b["events"][1].update(event_type="Attempt Started"), "events[1].event_type"),
    "extra field": (lambda b: b["events"][0].update(seq=4), "events[0].seq: unexpected field"),
    "payload not object": (
        lambda b: b["events"][0].update(payload=[1]),
        "events[0].payload: must be an object",
    ),
    "lifecycle id missing": (
        lambda b: b["events"][1]["payload"].pop("attempt_id"),
        "events[1].payload.attempt_id: required for attempt.started",
    ),
    "attempt_number not int": (
        lambda b: b["events"][0]["payload"].update(attempt_number="1"),
        "events[0].payload.attempt_number: must be an integer",
    ),
    "integer beyond 2**53": (
        lambda b: b["events"][0]["payload"].update(n=2**60),
        "events[0].payload.n: number 1152921504606846976 is outside ±(2**53 - 1)",
    ),
    "missing bundle_id": (lambda b: b.pop("bundle_id"), "bundle_id: required"),
    "empty events": (lambda b: b.update(events=[]), "events: must be a non-empty list"),
    "unknown top-level field": (lambda b: b.update(extra=1), "extra: unexpected field"),
    "bad artifact": (
        lambda b: b.update(artifacts=[{"name": "x", "sha256": "nothex", "bytes": -1}]),
        "artifacts[0].sha256: must be 64 lowercase hex digits",
    ),
}


CONFLICT_CASES = {
    "other target": (
        lambda b: b.update(target="api"),
        "events[0].payload.target_id: 'site' differs from the bundle's target 'api'",
    ),
    "repeated event_id": (
        lambda b: b["events"][2].update(event_id=b["events"][0]["event_id"]),
        "events[2].event_id: repeats events[0]",
    ),
}


@pytest.mark.parametrize("case", sorted(CONFLICT_CASES))
def test_a_bundle_that_contradicts_itself_is_409_naming_the_field(
    client: TestClient, store: NdjsonEventLog, case: str
) -> None:
    # Rules across fields, which no JSON Schema can state: kept out of 422 so that the published schema
    # is exactly what 422 checks (see test_control_plane_fuzz).
    mutate, problem = CONFLICT_CASES[case]
    body = bundle(created(), started(), failed("attempt-1"))
    mutate(body)
    response = ingest(client, body)
    assert response.status_code == 409, response.text
    assert problem in response.json()["detail"]
    assert store.head()[0] == 0


def test_a_time_ahead_of_the_servers_clock_is_409_naming_the_field(
    client: TestClient, store: NdjsonEventLog
) -> None:
    # Schema-valid (2000..2099) but more than a day ahead of the control plane's clock: a wrong clock.
    ahead = format_timestamp(utc_now() + timedelta(days=2))
    late = failed("attempt-1")
    late = replace(late, payload={**late.payload, "completed_at": ahead})
    response = ingest(client, bundle(replace(created(), timestamp=ahead), late))
    assert response.status_code == 409, response.text
    detail = response.json()["detail"]
    assert detail[0].startswith(f"events[0].timestamp: '{ahead}' is more than 86400 s ahead")
    assert detail[1].startswith(f"events[1].payload.completed_at: '{ahead}' is more than 86400 s ahead")
    assert "--max-clock-ahead" in detail[0] and store.head()[0] == 0
    # Within the limit (clocks drift): accepted; and the limit is a setting.
    soon = format_timestamp(utc_now() + timedelta(hours=1))
    assert ingest(client, bundle(replace(created(), timestamp=soon))).status_code == 200
    strict = TestClient(create_app(store, token=TOKEN, max_clock_ahead_seconds=0))
    assert ingest(strict, bundle(replace(started(), timestamp=soon), bundle_id="b-2")).status_code == 409


@pytest.mark.parametrize("case", sorted(SCHEMA_CASES))
def test_schema_errors_are_422_naming_the_field(client: TestClient, store: NdjsonEventLog, case: str) -> None:
    mutate, problem = SCHEMA_CASES[case]
    body = bundle(created(), started(), failed("attempt-1"))
    mutate(body)
    response = ingest(client, body)
    assert response.status_code == 422, response.text
    assert any(problem in line for line in response.json()["detail"]), response.json()
    assert store.head()[0] == 0


def test_a_replayed_bundle_returns_the_original_seqs_and_writes_nothing(
    client: TestClient, store: NdjsonEventLog
) -> None:
    assert ingest(client, bundle(created(), bundle_id="first")).status_code == 200
    body = bundle(started(), failed("attempt-1"), bundle_id="second")
    first = ingest(client, body)
    log_bytes = store.path.read_bytes()
    again = ingest(client, body)
    assert again.status_code == 200
    assert again.json()["seqs"] == first.json()["seqs"] == [2, 3]
    assert (again.json()["written"], again.json()["replayed"]) == (0, 2)
    assert store.path.read_bytes() == log_bytes


def test_an_event_id_reused_with_other_content_is_409_and_nothing_is_written(
    client: TestClient, store: NdjsonEventLog
) -> None:
    original = created()
    assert ingest(client, bundle(original)).status_code == 200
    changed = Event(
        original.event_id, original.event_type, original.timestamp, "someone-else", original.payload
    )
    response = ingest(client, bundle(started(), changed, bundle_id="b-2"))
    assert response.status_code == 409, response.text
    assert "conflict" in response.json()["error"]
    assert store.head()[0] == 1  # the new event of that bundle was not written either


# -- queries -----------------------------------------------------------------------------------------


def test_events_are_paged_by_seq(client: TestClient) -> None:
    ingest(client, bundle(created("a1"), started("a1"), created("a2", 2), started("a2"), failed("a2")))
    seen, after = [], 0
    while True:
        page = client.get("/v1/events", params={"after": after, "limit": 2}, headers=AUTH).json()
        assert page["head_seq"] == 5 and len(page["events"]) <= 2
        if not page["events"]:
            break
        seen += [e["seq"] for e in page["events"]]
        after = page["next_after"]
    assert seen == [1, 2, 3, 4, 5]
    first = client.get("/v1/events", headers=AUTH).json()["events"][0]
    assert first["event_type"] == "attempt.created" and first["hash"] and first["prev_hash"]


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=1001", "after=-1", "after=x", "after=1.5", "foo=1", "after=1&after=2", "limit=²"],
)
def test_bad_paging_parameters_are_400(client: TestClient, query: str) -> None:
    response = client.get(f"/v1/events?{query}", headers=AUTH)
    assert response.status_code == 400 and response.json()["error"]


def test_attempt_is_404_until_logged_then_record_with_events(client: TestClient) -> None:
    missing = client.get("/v1/attempts/attempt-1", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json() == {"error": "attempt not found", "detail": {"attempt_id": "attempt-1"}}
    ingest(client, bundle(created(), created("attempt-2", 2), started()))
    found = client.get("/v1/attempts/attempt-1", headers=AUTH).json()
    assert found["record"]["status"] == "running" and found["record"]["number"] == 1
    assert [e["seq"] for e in found["events"]] == [1, 3]
    assert [e["event_type"] for e in found["events"]] == ["attempt.created", "attempt.started"]


def test_graph_summary_follows_the_log(client: TestClient) -> None:
    ingest(client, bundle(created(), started()))
    summary = client.get("/v1/graph/summary", headers=AUTH).json()
    assert summary["nodes"]["Attempt"] == 1 and summary["status"]["Attempt"] == {"running": 1}
    ingest(client, bundle(failed("attempt-1"), created("attempt-2", 2), bundle_id="b-2"))
    summary = client.get("/v1/graph/summary", headers=AUTH).json()
    assert summary["last_seq"] == 4 and summary["status"]["Attempt"] == {"created": 1, "failed": 1}


def test_autonomy_status_per_target(store: NdjsonEventLog) -> None:
    policy = {"site": {"circuit_breaker_failures": 2}, "idle": {"circuit_breaker_failures": 3}}
    client = TestClient(create_app(store, token=TOKEN, targets_status=lambda: policy))
    pr = lifecycle.pr_created(**IDS, pr_number=4, pr_url="u4", branch_name="b", actor_id="w")
    merged_pr = lifecycle.pr_created(
        target_id="site",
        task_id="t",
        attempt_id="a9",
        pr_number=5,
        pr_url="u5",
        branch_name="c",
        actor_id="w",
    )
    merged = lifecycle.pr_finished(
        kind="pr.merged", target_id="site", pr_number=5, task_ref=None, actor_id="x"
    )
    ingest(client, bundle(created(), started(), pr, merged_pr, merged))
    ingest(
        client, bundle(created("f1", 1, "t1"), failed("f1", "t1"), created("f2", 1, "t2"), failed("f2", "t2"))
    )
    status = client.get("/v1/autonomy/status", headers=AUTH).json()
    assert sorted(status["targets"]) == ["idle", "site"]
    site = status["targets"]["site"]
    assert site["circuit"] == {"state": "open", "consecutive_failures": 2, "threshold": 2}
    assert [p["number"] for p in site["open_prs"]] == [4]
    assert [a["attempt_id"] for a in site["running_attempts"]] == ["attempt-1"]
    assert [e["seq"] for e in site["last_events"]][:2] == [9, 8]  # most recent first
    assert status["targets"]["idle"]["circuit"]["state"] == "closed"


def test_healthz_needs_no_token_and_reports_an_unreadable_store(
    client: TestClient, store: NdjsonEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(client, bundle(created()))
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["head_seq"] == 1

    def broken() -> tuple[int, str]:
        raise TransientError("disk gone")

    monkeypatch.setattr(store, "head", broken)
    down = client.get("/healthz")
    assert down.status_code == 503 and "disk gone" in down.json()["detail"]


def test_a_torn_tail_is_reported_and_left_alone_until_the_next_ingest(
    client: TestClient, store: NdjsonEventLog
) -> None:
    ingest(client, bundle(created()))
    with store.path.open("ab") as handle:
        handle.write(b'{"seq":2,"prev')
    damaged = store.path.read_bytes()
    health = client.get("/healthz").json()
    assert health["status"] == "torn" and health["head_seq"] == 1
    assert (health["torn"]["start"], health["torn"]["end"]) == (len(damaged) - 14, len(damaged))
    page = client.get("/v1/events", headers=AUTH).json()
    assert page["torn"]["length"] == 14 and [e["seq"] for e in page["events"]] == [1]
    assert client.get("/v1/graph/summary", headers=AUTH).status_code == 200
    assert store.path.read_bytes() == damaged  # readers never write
    assert ingest(client, bundle(started(), bundle_id="b-2")).json()["seqs"] == [3]
    assert [e.event_type for e in store.read()] == [
        "attempt.created",
        "log.tail_quarantined",
        "attempt.started",
    ]
    assert client.get("/healthz").json()["status"] == "ok"


def test_metrics_count_ingest_rejections_and_latency(client: TestClient) -> None:
    body = bundle(created(), started())
    ingest(client, body)
    ingest(client, body)  # a replay
    client.get("/v1/events")  # 401
    text = client.get("/metrics").text
    assert "leviathan_ingested_events_total 2.0" in text
    assert "leviathan_replayed_events_total 2.0" in text
    assert "leviathan_ingested_bundles_total 2.0" in text
    assert 'leviathan_rejected_requests_total{status="401"} 1.0' in text
    assert 'leviathan_request_duration_seconds_count{method="POST",route="/v1/events/ingest"} 2.0' in text
    assert "leviathan_event_log_head_seq 2.0" in text


def test_openapi_describes_every_route(client: TestClient) -> None:
    document = client.get("/openapi.json", headers=AUTH).json()
    assert document["openapi"].startswith("3.1")
    routes = [r for r in client.app.routes if isinstance(r, Route)]
    for route in routes:
        operations = document["paths"][route.path]
        assert {m.lower() for m in route.methods if m != "HEAD"} == set(operations)
        for operation in operations.values():
            secured = operation.get("security") != []
            assert ("401" in operation["responses"]) == secured
    assert {"400", "401", "409", "413", "422"} <= set(
        document["paths"]["/v1/events/ingest"]["post"]["responses"]
    )


def test_unknown_route_is_json_404(client: TestClient) -> None:
    response = client.get("/v2/nothing", headers=AUTH)
    assert response.status_code == 404 and response.json()["error"] == "Not Found"


def test_create_app_refuses_an_empty_token(store: NdjsonEventLog) -> None:
    with pytest.raises(ConfigError, match="token"):
        create_app(store, token=" ")


# -- the worker posting through a real server -------------------------------------------------------


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` under a real uvicorn on a free loopback port, in a thread; stopped on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # the kernel picks a free port, and we hold it: no race with others
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="none", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_the_worker_posts_its_events_to_the_control_plane(tmp_path: Path) -> None:
    repo_files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("intro")), "README.md": "# target\n"}
    project = make_project(tmp_path / "project", {"site": {"files": repo_files}})
    store = NdjsonEventLog(tmp_path / "cp" / "events.ndjson")
    app = create_app(store, token=TOKEN)
    with serving(app) as url:
        # The scheduler's attempt.created, as Dagster would post it before starting the worker.
        scheduled = lifecycle.attempt_created(
            target_id="site",
            task_id="intro",
            attempt_id="attempt-cp",
            attempt_number=1,
            branch_name="agent/intro-attempt-cp",
            executor="local",
            actor_id="scheduler",
        )
        assert ControlPlaneSink(url, TOKEN, "site", "sched").append([scheduled]) == [1]
        proc = run_worker(
            project, "site", "intro", "attempt-cp", CONTROL_PLANE_URL=url, CONTROL_PLANE_TOKEN=TOKEN
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        with TestClient(app) as api:  # the same app object the server runs: reads its projections
            found = api.get("/v1/attempts/attempt-cp", headers=AUTH).json()
    assert [e.event_type for e in store.read()] == [
        "attempt.created",
        "attempt.started",
        "pr.created",
        "attempt.succeeded",
    ]
    assert not project.home.events_path.exists()  # nothing went to the worker's local log
    record = found["record"]
    assert record["status"] == "succeeded" and record["pr_number"] == 1
    assert [e["seq"] for e in found["events"]] == [1, 2, 3, 4]


class _FlakyStore(NdjsonEventLog):
    """Fails its first appends as a briefly unavailable disk would."""

    failures = 2

    def append(self, events):  # type: ignore[override]
        if self.failures:
            self.failures -= 1
            raise TransientError("disk busy")
        return super().append(events)


def test_sink_retries_5xx_honouring_retry_after(tmp_path: Path) -> None:
    store = _FlakyStore(tmp_path / "events.ndjson")
    delays: list[float] = []
    with serving(create_app(store, token=TOKEN)) as url:
        sink = ControlPlaneSink(url, TOKEN, "site", "attempt-1", sleep=delays.append)
        assert sink.append([created()]) == [1]
    assert delays == [1.0, 1.0]  # the 503's Retry-After, not the backoff
    assert store.head()[0] == 1


def test_sink_gives_up_with_transient_error_and_refuses_4xx(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    delays: list[float] = []
    dead = ControlPlaneSink(f"http://127.0.0.1:{port}", TOKEN, "site", "a", backoff=0.5, sleep=delays.append)
    with pytest.raises(TransientError, match="not acknowledged after 4 tries"):
        dead.append([created()])
    assert delays == [0.5, 1.0, 2.0]

    store = NdjsonEventLog(tmp_path / "events.ndjson")
    original = created()
    with serving(create_app(store, token=TOKEN)) as url:
        with pytest.raises(LeviathanError, match="HTTP 401"):
            ControlPlaneSink(url, "wrong", "site", "a", sleep=delays.append).append([original])
        sink = ControlPlaneSink(url, TOKEN, "site", "a", sleep=delays.append)
        sink.append([original])
        changed = Event(original.event_id, original.event_type, original.timestamp, "x", original.payload)
        with pytest.raises(ConflictError):
            sink.append([changed])
    assert delays == [0.5, 1.0, 2.0]  # 401 and 409 are never retried


def test_sink_refuses_non_http_urls_and_a_missing_token() -> None:
    with pytest.raises(ConfigError, match="http"):
        ControlPlaneSink("file:///etc/passwd", TOKEN, "site", "a")
    with pytest.raises(ConfigError, match="CONTROL_PLANE_TOKEN"):
        ControlPlaneSink("http://127.0.0.1:1", "", "site", "a")


# -- leviathan control-plane serve -------------------------------------------------------------------

# The lead registers the command in cli/main.py; until then (and after) this adds it the same way.
SERVE = (
    "from leviathan_dagster.cli.main import cli\n"
    "from leviathan_dagster.cli.control_plane import COMMANDS\n"
    "for command in COMMANDS:\n"
    "    cli.add_command(command)\n"
    "cli()\n"
)


def leviathan(project_root: Path, *args: str, token: str | None, **popen: Any) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "LEVIATHAN_CONTROL_PLANE_TOKEN"}
    env.update(
        LEVIATHAN_HOME=str(project_root / "home"), LEVIATHAN_CONFIG=str(project_root / "leviathan.yaml")
    )
    if token is not None:
        env["LEVIATHAN_CONTROL_PLANE_TOKEN"] = token
    return subprocess.Popen(
        [sys.executable, "-c", SERVE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen
    )


def test_serve_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    with leviathan(tmp_path, "control-plane", "serve", token=None) as proc:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "LEVIATHAN_CONTROL_PLANE_TOKEN is not set" in err.decode() and "Traceback" not in err.decode()


def test_serve_answers_over_http_with_policy_from_the_config(tmp_path: Path) -> None:
    make_project(
        tmp_path, {"site": {"files": {"README.md": "x\n"}, "policy": {"circuit_breaker_failures": 3}}}
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with leviathan(tmp_path, "control-plane", "serve", "--port", str(port), token=TOKEN) as proc:
        try:
            base = f"http://127.0.0.1:{port}"
            health = _poll(f"{base}/healthz", proc)
            assert health == {"status": "ok", "head_seq": 0, "head_hash": health["head_hash"], "torn": None}
            request = urllib.request.Request(f"{base}/v1/autonomy/status", headers=AUTH)
            with urllib.request.urlopen(request, timeout=10) as response:
                status = json.loads(response.read())
            assert status["targets"]["site"]["circuit"]["threshold"] == 3
        finally:
            proc.terminate()
            proc.communicate(timeout=30)


def _poll(url: str, proc: subprocess.Popen) -> Any:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.loads(response.read())
        except OSError as exc:
            if isinstance(exc, urllib.error.HTTPError):
                exc.close()  # it holds the socket until collected otherwise
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "control plane did not answer"
            time.sleep(0.1)


def test_control_plane_and_sink_import_without_dagster() -> None:
    modules = [
        "leviathan_dagster.control_plane",
        "leviathan_dagster.core.projections.graph",
        "leviathan_dagster.cli.control_plane",
        "worker.event_sink",
    ]
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'dagster' or name.startswith(('dagster.', 'dagster_')):\n"
        "            raise ImportError('dagster is blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {modules!r}:\n"
        "    __import__(m)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# -- scoped tokens -----------------------------------------------------------------------------------

WORKER_KEY = b"k" * 32
OPERATOR = "operator-secret"
SCHEDULER = "scheduler-secret"


@pytest.fixture
def scoped(store: NdjsonEventLog) -> TestClient:
    tokens = {OPERATOR: Principal("alice", "operator"), SCHEDULER: Principal("scheduler", "orchestrator")}
    return TestClient(create_app(store, tokens=tokens, worker_key=WORKER_KEY))


def post_as(client: TestClient, secret: str, body: dict[str, Any]) -> Any:
    return client.post("/v1/events/ingest", json=body, headers={"Authorization": f"Bearer {secret}"})


def test_a_worker_token_appends_only_its_own_attempts_events(
    scoped: TestClient, store: NdjsonEventLog
) -> None:
    assert post_as(scoped, SCHEDULER, bundle(created())).status_code == 200
    mine = mint_worker_token(WORKER_KEY, "attempt-1")
    assert post_as(scoped, mine, bundle(started(), bundle_id="b-2")).status_code == 200
    other = post_as(scoped, mine, bundle(failed("attempt-2"), bundle_id="b-3"))
    assert other.status_code == 403
    assert other.json()["detail"] == ["events[0]: this worker token speaks for attempt 'attempt-1' only"]
    forged = post_as(scoped, mine, bundle(created("attempt-9", number=2), bundle_id="b-4"))
    assert forged.status_code == 403 and "a worker token may append only" in forged.json()["detail"][0]
    # A token minted under another key, or for another attempt with this one's MAC, is no token.
    assert post_as(scoped, mint_worker_token(b"x" * 32, "attempt-1"), bundle(started())).status_code == 401
    spliced = "wk1.attempt-2." + mine.rpartition(".")[2]
    assert post_as(scoped, spliced, bundle(started("attempt-2"))).status_code == 401
    actors = [(e.event_type, e.event.actor_id) for e in store.read()]
    assert actors == [("attempt.created", "scheduler"), ("attempt.started", "worker:attempt-1")]


def test_operator_events_need_an_operator_token(scoped: TestClient, store: NdjsonEventLog) -> None:
    pause = Event.new("target.paused", {"target_id": "site", "reason": "maintenance"}, actor_id="anyone")
    refused = post_as(scoped, SCHEDULER, bundle(pause))
    assert refused.status_code == 403
    assert refused.json()["detail"] == [
        "events[0]: target.paused is an operator action: it needs an operator token"
    ]
    reset = Event.new("circuit.reset", {"target_id": "site"}, actor_id="anyone")
    worker = mint_worker_token(WORKER_KEY, "attempt-1")
    assert post_as(scoped, worker, bundle(reset, bundle_id="b-2")).status_code == 403
    assert post_as(scoped, OPERATOR, bundle(pause, bundle_id="b-3")).status_code == 200
    [stored] = list(store.read())
    assert (stored.event_type, stored.event.actor_id) == ("target.paused", "alice")


def test_clearing_an_escalation_needs_an_operator_token_and_a_valid_payload(
    scoped: TestClient, store: NdjsonEventLog
) -> None:
    payload = {"target_id": "site", "task_id": "a", "cleared": "escalated", "reason": "fixed"}
    cleared = Event.new("task.escalation_cleared", payload, actor_id="anyone")
    refused = post_as(scoped, SCHEDULER, bundle(cleared))
    assert refused.status_code == 403
    assert refused.json()["detail"] == [
        "events[0]: task.escalation_cleared is an operator action: it needs an operator token"
    ]
    bad = Event.new("task.escalation_cleared", {"target_id": "site"}, actor_id="anyone")
    invalid = post_as(scoped, OPERATOR, bundle(bad, bundle_id="b-2"))
    assert invalid.status_code == 422 and "payload.task_id: required" in str(invalid.json()["detail"])
    assert post_as(scoped, OPERATOR, bundle(cleared, bundle_id="b-3")).status_code == 200
    [stored] = list(store.read())
    assert (stored.event_type, stored.event.actor_id) == ("task.escalation_cleared", "alice")


def test_the_single_unnamed_token_cannot_append_operator_events(client: TestClient) -> None:
    reset = Event.new("circuit.reset", {"target_id": "site"}, actor_id="operator")
    assert ingest(client, bundle(reset)).status_code == 403


def test_serve_reads_named_tokens_from_the_config(tmp_path: Path) -> None:
    from leviathan_dagster.cli.context import CliContext
    from leviathan_dagster.cli.control_plane import _named_tokens
    from leviathan_dagster.core.home import LeviathanHome

    config = tmp_path / "leviathan.yaml"
    project = make_project(
        tmp_path / "p", {"site": {"files": {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"))}}}
    )
    text = project.config_path.read_text()
    config.write_text(
        text
        + "control_plane:\n  tokens:\n    - {name: alice, role: operator, secret: {env: CP_ALICE}}\n"
        + "  worker_token_key: {env: CP_WORKERS}\n"
    )
    ctx = CliContext(config_path=config, home=LeviathanHome(tmp_path / "home"))
    tokens, key = _named_tokens(ctx, {"CP_ALICE": "a-secret", "CP_WORKERS": "w" * 40})
    assert tokens == {"a-secret": Principal("alice", "operator")} and key == b"w" * 40
    with pytest.raises(ConfigError, match="CP_ALICE is not set"):
        _named_tokens(ctx, {"CP_WORKERS": "w" * 40})
    config.write_text(
        text + "control_plane:\n  tokens:\n    - {name: 'bad id', role: root, secret: literal}\n"
    )
    with pytest.raises(ConfigError) as caught:
        _named_tokens(ctx, {})
    message = str(caught.value)
    assert "name must be an id" in message and "role 'root' is unknown" in message and "secret" in message


# -- slow and vanishing clients ----------------------------------------------------------------------


def _raw_post(url: str, declared: int, sent: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=10)
    head = (
        f"POST /v1/events/ingest HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    )
    conn.sendall(head.encode() + sent)
    return conn


def test_a_body_that_stops_arriving_is_answered_408(store: NdjsonEventLog) -> None:
    with serving(create_app(store, token=TOKEN, body_timeout=0.5)) as url:
        conn = _raw_post(url, 500, b'{"target": "si')
        with conn:
            answer = conn.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408") and "request body timeout" in answer
    assert store.head()[0] == 0


def test_a_client_disconnect_is_one_log_line_and_writes_nothing(
    store: NdjsonEventLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with serving(create_app(store, token=TOKEN)) as url:
        _raw_post(url, 500, b'{"target": "si').close()
        deadline = time.monotonic() + 10
        while "disconnected before sending the whole body" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.02)
    assert "Traceback" not in caplog.text and "Exception in ASGI application" not in caplog.text
    [line] = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert "\n" not in line.getMessage() and line.exc_info is None
    assert store.head()[0] == 0


def test_poison_already_in_the_log_is_an_anomaly_not_a_500(client: TestClient, store: NdjsonEventLog) -> None:
    # Written straight into the store (before validation existed): the issue saw 500s on every read.
    good = failed("attempt-1")
    store.append(
        [
            created(),
            Event("p-1", "attempt.failed", good.timestamp, "w", {**good.payload, "completed_at": {}}),
            Event("p-2", "attempt.started", "2026-01-01T00:00:00", "w", dict(IDS)),
        ]
    )
    assert client.get("/v1/graph/summary", headers=AUTH).status_code == 200
    assert client.get("/v1/attempts/attempt-1", headers=AUTH).json()["record"]["status"] == "created"
    site = client.get("/v1/autonomy/status", headers=AUTH).json()["targets"]["site"]
    assert [(a["seq"], a["attempt_id"]) for a in site["anomalies"]] == [(2, "attempt-1"), (3, "attempt-1")]
    assert site["anomalies"][0]["problem"] == "payload.completed_at: must be a string, got an object"
