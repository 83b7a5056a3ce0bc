"""What attempts cost: per attempt from its terminal event's usage, per target and UTC day folded from a
real event log (one pass and incrementally), and the daily ``costs`` asset computed through Dagster."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner
from support import backlog_yaml, docs_task, make_project, run_worker

from leviathan_dagster.cli.main import cli
from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.attempts.ledger import AttemptRecord
from leviathan_dagster.core.events.model import Event, utc_now
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.generators.claude.prices import cost_usd, price_for
from leviathan_dagster.core.generators.usage import CallUsage, UsageRecorder
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.projections.costs import (
    UNKNOWN_GENERATOR,
    CostFold,
    attempt_cost,
    compute_costs,
    cost_table_rows,
    sum_costs,
)
from leviathan_dagster.core.projections.log_view import LogView
from leviathan_dagster.definitions import build_definitions
from leviathan_dagster.defs.attempts.metadata_entries import cost_entries, link_entries
from leviathan_dagster.defs.platform.resources import LeviathanResource

DAY = date(2025, 3, 1)
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
MODEL = "claude-sonnet-4-6"


def claude_usage(*calls: tuple[int, int, int, int], model: str = MODEL) -> dict:
    """A usage summary as the Claude generator records it: per call, at the model's list price."""
    recorder = UsageRecorder()
    recorder.for_generator("claude")
    recorder.describe(model=model, template_version="v1", prompt_sha256="0" * 64)
    price = price_for(model)
    for n, (inp, out, write, read) in enumerate(calls):
        call = CallUsage(model, inp, out, write, read, 0.5, "end_turn", f"{n:064d}")
        usd = None
        if price is not None:
            usd = cost_usd(price, input_tokens=inp, output_tokens=out, cache_write=write, cache_read=read)
        recorder.record(call, usd=usd)
    return recorder.summary()


def docs_usage() -> dict:
    recorder = UsageRecorder()
    recorder.for_generator("docs")
    return recorder.summary()


def ended(log, target: str, task: str, number: int, at: datetime, *, ok: bool = True, **payload) -> None:
    ids = {"attempt_id": f"{target}-{task}-{number}", "target_id": target, "task_id": task}
    created = lifecycle.attempt_created(
        **ids, attempt_number=number, branch_name="b", executor="local", actor_id="t", at=at
    )
    kind = "attempt.succeeded" if ok else "attempt.failed"
    extra = {} if ok else {"failure_type": "tests_failed", "error_summary": "x"}
    log.append([created, Event.new(kind, {**ids, **extra, **payload}, actor_id="t", at=at)])


@pytest.fixture
def log(tmp_path: Path) -> NdjsonEventLog:
    return NdjsonEventLog(tmp_path / "events.ndjson")


def test_attempt_cost_of_each_kind_of_attempt() -> None:
    docs = attempt_cost(docs_usage(), "docs")
    assert (docs.generator, docs.recorded, docs.calls, docs.total_tokens, docs.usd) == (
        "docs",
        True,
        0,
        0,
        0.0,
    )
    claude = attempt_cost(claude_usage((1000, 200, 3000, 0), (50, 100, 0, 3000)), None)
    assert claude.generator == "claude" and claude.model == MODEL and claude.calls == 2
    assert (claude.input_tokens, claude.output_tokens) == (1050, 300)
    assert (claude.cache_creation_input_tokens, claude.cache_read_input_tokens) == (3000, 3000)
    # Sonnet 4.6: $3 in, $15 out, $3.75 cache write, $0.30 cache read per million.
    assert claude.usd == pytest.approx((1050 * 3 + 300 * 15 + 3000 * 3.75 + 3000 * 0.3) / 1e6)
    unpriced = attempt_cost(claude_usage((10, 5, 0, 0), model="claude-mythos-5-2"))
    assert unpriced.usd is None and unpriced.unpriced and unpriced.total_tokens == 15
    # An orchestrator-written failure (the worker died) or an older log: no usage, cost unknown.
    lost = attempt_cost(None, None)
    assert (lost.generator, lost.recorded, lost.usd, lost.unpriced) == (UNKNOWN_GENERATOR, False, None, False)
    # Hostile values in a log are not counted (negative, bool, text).
    odd = attempt_cost({"calls": True, "input_tokens": -5, "output_tokens": "9", "usd": "1"}, "x")
    assert (odd.calls, odd.total_tokens, odd.usd) == (0, 0, 0.0)


def test_costs_per_target_and_day_from_the_log(log: NdjsonEventLog) -> None:
    ended(log, "site", "a", 1, T0, generator="docs", usage=docs_usage())
    ended(log, "site", "b", 1, T0 + timedelta(hours=1), ok=False, usage=claude_usage((1000, 200, 0, 0)))
    ended(log, "site", "c", 1, T0 + timedelta(hours=2), ok=False)  # the worker died: no usage
    ended(log, "api", "x", 1, T0, usage=claude_usage((10, 5, 0, 0), model="claude-mythos-5-2"))
    ended(log, "site", "a", 2, T0 + timedelta(days=1), generator="docs", usage=docs_usage())
    costs = compute_costs(log.read(), DAY)
    assert list(costs) == ["api", "site"]
    site = costs["site"]
    assert site.attempts == 3 and site.attempts_by_generator == {"claude": 1, "docs": 1, "unknown": 1}
    assert (site.model_calls, site.input_tokens, site.output_tokens, site.total_tokens) == (
        1,
        1000,
        200,
        1200,
    )
    assert site.usd == pytest.approx((1000 * 3 + 200 * 15) / 1e6)
    assert (site.unpriced_attempts, site.unrecorded_attempts) == (0, 1)
    api = costs["api"]
    assert (api.usd, api.unpriced_attempts, api.total_tokens) == (0.0, 1, 15)
    assert compute_costs(log.read(), DAY + timedelta(days=1))["site"].attempts == 1
    assert compute_costs(log.read(), date(2024, 1, 1)) == {}
    rows = cost_table_rows(costs.values())
    assert rows[0][:4] == ["2025-03-01", "api", 1, "$0.0000 (+ 1 unpriced)"]
    assert rows[1][3:6] == ["$0.0060 (+ 1 unrecorded)", 1200, "claude: 1, docs: 1, unknown: 1"]
    total = sum_costs(costs.values())
    assert (total.attempts, total.total_tokens, total.unpriced_attempts) == (4, 1215, 1)


def test_only_the_first_terminal_event_of_an_attempt_counts(log: NdjsonEventLog) -> None:
    ended(log, "site", "a", 1, T0, usage=claude_usage((100, 10, 0, 0)))
    ids = {"attempt_id": "site-a-1", "target_id": "site", "task_id": "a"}
    usage = claude_usage((100, 10, 0, 0))
    # A late duplicate (a recovered copy) and a malformed event: neither is counted.
    log.append([Event.new("attempt.succeeded", {**ids, "usage": usage}, actor_id="t", at=T0)])
    log.append([Event.new("attempt.failed", {"target_id": "site", "usage": usage}, actor_id="t", at=T0)])
    [site] = compute_costs(log.read(), DAY).values()
    assert site.attempts == 1 and site.total_tokens == 110


def test_the_incremental_view_matches_one_pass(log: NdjsonEventLog) -> None:
    view = LogView(log)
    view.require("costs")
    for hour in range(6):
        ended(log, "site", f"t{hour}", 1, T0 + timedelta(hours=hour), usage=claude_usage((hour, 1, 0, 0)))
        view.refresh()
        assert view.costs.costs_for(DAY) == compute_costs(log.read(), DAY)
    fold = CostFold()
    fold.apply(log.read())
    assert [r.day for r in fold.days(DAY, DAY)] == ["2025-03-01"]
    assert fold.days(DAY + timedelta(days=1)) == []


@pytest.mark.dagster
def test_costs_asset_through_the_daily_job(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"site": {}, "api": {}})
    events = project.events()
    ended(events, "site", "a", 1, T0, generator="docs", usage=docs_usage())
    ended(events, "site", "b", 1, T0, ok=False, usage=claude_usage((2000, 400, 1000, 500)))
    ended(events, "api", "x", 1, T0 - timedelta(days=1), generator="tests", usage=docs_usage())
    resource = LeviathanResource(config_path=str(project.config_path), home=str(project.home.root))
    defs = build_definitions(resource)
    with dg.instance_for_test() as instance:
        job = defs.resolve_job_def("delivery_metrics_job")
        result = job.execute_in_process(instance=instance, partition_key=DAY.isoformat())
        [mat] = result.asset_materializations_for_node("costs")
    metadata = mat.metadata
    expected_usd = (2000 * 3 + 400 * 15 + 1000 * 3.75 + 500 * 0.3) / 1e6
    # Numbers, typed: what Dagster plots across the day partitions.
    assert isinstance(metadata["cost_usd"], dg.FloatMetadataValue)
    assert metadata["cost_usd"].value == pytest.approx(expected_usd)
    assert metadata["cost_usd [site]"].value == pytest.approx(expected_usd)
    assert metadata["attempts"].value == 2 and metadata["total_tokens"].value == 3900
    assert metadata["model_calls"].value == 1 and metadata["unrecorded_attempts"].value == 0
    table = metadata["per_target"].value
    usd = f"${expected_usd:.4f}"
    assert f"| 2025-03-01 | site | 2 | {usd} | 3900 | claude: 1, docs: 1 | 1 | 2000 | 400 | 1000 | 500 |" in (
        table
    )
    # api's attempt ended the day before: that day it has a zero row (no gap in its plot).
    assert "| 2025-03-01 | api | 0 | $0.0000 | 0 |  | 0 | 0 | 0 | 0 | 0 |" in table
    assert metadata["cost_usd [api]"].value == 0.0
    # The days before stand beside it: the trend table.
    assert "| 2025-02-28 | api | 1 | $0.0000 | 0 | tests: 1 |" in metadata["last_14_days"].value
    api, site = metadata["per_target_table"].value.records
    assert site.data["target"] == "site" and site.data["usd"] == pytest.approx(expected_usd)
    assert (api.data["target"], api.data["attempts"]) == ("api", 0)


def test_costs_command_shows_a_real_docs_attempt_and_a_model_attempt(tmp_path: Path) -> None:
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"))}
    project = make_project(tmp_path, {"site": {"files": files}})
    assert run_worker(project, "site", "a", "attempt-1").returncode == 0  # the docs generator, for real
    ended(project.events(), "site", "paid", 1, utc_now(), ok=False, usage=claude_usage((1000, 200, 0, 0)))

    def costs(*args: str):
        options = ["--config", str(project.config_path), "--home", str(project.home.root)]
        return CliRunner().invoke(cli, [*options, "costs", *args], catch_exceptions=False)

    today = utc_now().date().isoformat()
    shown = costs()
    assert shown.exit_code == 0, shown.output
    assert (
        f"| {today} | site | 2 | $0.0060 | 1200 | claude: 1, docs: 1 | 1 | 1000 | 200 | 0 | 0 |"
        in shown.output
    )
    assert "2 attempts, 1200 tokens, $0.0060" in shown.output
    [row] = json.loads(costs("--json", "--target", "site").stdout)
    assert (row["attempts_by_generator"], row["usd"], row["unrecorded_attempts"]) == (
        {"claude": 1, "docs": 1},
        0.006,
        0,
    )
    assert (
        "no attempt ended between 2024-01-01 and 2024-01-01"
        in costs("--until", "2024-01-01", "--days", "1").output
    )
    unknown = costs("--target", "nope")
    assert unknown.exit_code == 2 and "no target 'nope'" in unknown.output


def record_with(usage: dict | None, **fields) -> AttemptRecord:
    return AttemptRecord("site-a-1", "site", "a", 1, "failed", "2025-03-01T09:00:00Z", usage=usage, **fields)


@pytest.mark.dagster
def test_attempt_cost_entries_say_what_is_not_known() -> None:
    priced = cost_entries(record_with(claude_usage((1000, 200, 0, 0))), None)
    assert (priced["generator"], priced["model"], priced["model_calls"].value) == ("claude", MODEL, 1)
    assert isinstance(priced["cost_usd"], dg.FloatMetadataValue) and priced["cost_usd"].value == 0.006
    unpriced = cost_entries(record_with(claude_usage((10, 5, 0, 0), model="claude-mythos-5-2")), None)
    assert "cost_usd" not in unpriced and "no list price" in unpriced["cost_note"]
    assert unpriced["total_tokens"].value == 15
    lost = cost_entries(record_with(None), None)
    assert "cost_usd" not in lost and "no usage recorded" in lost["cost_note"]
    assert (lost["generator"], lost["total_tokens"].value) == ("unknown", 0)


@pytest.mark.dagster
def test_a_github_pr_links_to_its_page_without_a_cli_hint(tmp_path: Path) -> None:
    url = "https://github.com/acme/service/pull/7"
    entries = link_entries(record_with(None, pr_number=7, pr_url=url), LeviathanHome(tmp_path))
    assert entries["pr_url"] == dg.MetadataValue.url(url) and "pr_show" not in entries
    # An old local:// URL whose record is gone: no link that would not open, the CLI hint instead.
    old = link_entries(record_with(None, pr_number=3, pr_url="local://site/pull/3"), LeviathanHome(tmp_path))
    assert old["pr_url"] == "" and old["pr_show"] == "leviathan prs show 3 --target site --patch"
