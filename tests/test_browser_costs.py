"""What attempts cost, seen in a real browser: the Dagster UI (webserver + daemon on a temporary instance)
shows an attempt's generator, tokens and USD (zero for the docs generator, not absent), its PR as a link
with a real ``file://`` href to the local forge's record, and the daily ``costs`` asset's tables.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, dagster_env, dagster_ui, open_page, screenshot
from support import backlog_yaml, docs_task, make_project

from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.forge.local import LocalForge
from leviathan_dagster.core.generators.claude.prices import cost_usd, price_for
from leviathan_dagster.core.generators.usage import CallUsage, UsageRecorder
from leviathan_dagster.definitions import build_definitions
from leviathan_dagster.defs.platform.resources import LeviathanResource

pytestmark = [pytest.mark.browser, pytest.mark.dagster]
sync_api = pytest.importorskip("playwright.sync_api")
MODEL = "claude-sonnet-4-6"
# A Claude attempt's calls (input, output, cache write, cache read), priced as the generator prices them.
CALLS = ((12_000, 1_500, 8_000, 0), (900, 2_100, 0, 8_000))
# The UI loads a partition's metadata after the page itself; on a loaded 2-core machine that takes a while.
UI_MS = 120_000
SITE_A = quote("site/a", safe="")


def seed_claude_attempt(project) -> float:
    """A Claude attempt of site/paid that ended today, with the usage its worker records; its USD."""
    usage, price = UsageRecorder(), price_for(MODEL)
    usage.for_generator("claude")
    usage.describe(model=MODEL, template_version="v1", prompt_sha256="0" * 64)
    for n, (inp, out, write, read) in enumerate(CALLS):
        usd = cost_usd(price, input_tokens=inp, output_tokens=out, cache_write=write, cache_read=read)
        usage.record(CallUsage(MODEL, inp, out, write, read, 1.0, "end_turn", f"{n:064d}"), usd=usd)
    ids = {"target_id": "site", "task_id": "paid", "attempt_id": "attempt-paid-1"}
    project.events().append(
        [
            lifecycle.attempt_created(
                **ids, attempt_number=1, branch_name="agent/paid-1", executor="local", actor_id="t"
            ),
            lifecycle.attempt_failed(
                **ids,
                failure_type="tests_failed",
                error_summary="seeded",
                actor_id="t",
                usage=usage.summary(),
            ),
        ]
    )
    return usage.usd


def open_partition(page, url: str, first_key: str) -> None:
    """Open a partition's page and wait until its metadata table shows ``first_key``."""
    open_page(page, url)
    page.get_by_text(first_key, exact=True).filter(visible=True).first.wait_for(timeout=UI_MS)


def metadata_value(page, key: str):
    """The value cell beside a metadata key in the asset's metadata table (the drawn one)."""
    # Each row: the key's cell, the value's cell, and an empty one for the entry's description.
    row = page.locator("tr").filter(has=page.get_by_text(key, exact=True)).filter(visible=True).first
    return row.locator("td").nth(1)


@pytest.fixture(scope="module")
def costs_ui(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (or set LEVIATHAN_CHROMIUM)")
    root = tmp_path_factory.mktemp("costs")
    project = make_project(
        root / "project", {"site": {"files": {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"))}}}
    )
    usd = seed_claude_attempt(project)
    env = dagster_env(root / "dagster", project.config_path, project.home.root)
    resource = LeviathanResource(config_path=str(project.config_path), home=str(project.home.root))
    defs = build_definitions(resource)
    today, yesterday = utc_now().date().isoformat(), (utc_now().date() - timedelta(days=1)).isoformat()
    with dg.DagsterInstance.from_config(str(root / "dagster")) as instance:
        # The docs attempt through Dagster (its PR stays open, so the daemon's scheduler starts nothing
        # more), then the day's costs as the daily schedule computes them.
        run_now = {"ops": {"run_task_now": {"config": {"target": "site", "task": "a", "operator": "t"}}}}
        assert (
            defs.resolve_job_def("run_task_now_job")
            .execute_in_process(instance=instance, run_config=run_now)
            .success
        )
        # Yesterday (nothing ended then: zeros) and today: two points on the costs asset's plots.
        for day in (yesterday, today):
            daily = defs.resolve_job_def("delivery_metrics_job")
            assert daily.execute_in_process(instance=instance, partition_key=day).success
    [pr] = LocalForge("site", str(project.repo("site")), project.home.root).list_pull_requests("open")
    with dagster_ui(env, root) as base, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        page.set_default_timeout(60_000)
        try:
            yield base, page, pr, usd, today
        finally:
            browser.close()


def test_attempt_shows_generator_tokens_and_zero_usd(costs_ui) -> None:
    base, page, _, _, _ = costs_ui
    open_partition(page, f"{base}/assets/attempt_outcomes?view=partitions&partition={SITE_A}", "generator")
    sync_api.expect(metadata_value(page, "generator")).to_have_text("docs")
    sync_api.expect(metadata_value(page, "cost_usd")).to_have_text(re.compile(r"^0(\.0+)?$"))
    for key in ("model_calls", "input_tokens", "output_tokens", "cache_read_input_tokens", "total_tokens"):
        sync_api.expect(metadata_value(page, key)).to_have_text("0")
    screenshot(page, "attempt-cost-zero-for-docs")


def test_pr_link_is_a_clickable_file_url(costs_ui) -> None:
    base, page, pr, _, _ = costs_ui
    open_partition(page, f"{base}/assets/attempt_outcomes?view=partitions&partition={SITE_A}", "generator")
    # The entry is drawn as a link (its text, and an icon beside it): the text's href is the PR's URL.
    link = metadata_value(page, "pr_url").get_by_role("link", name=pr.url, exact=True)
    sync_api.expect(link).to_be_visible()
    sync_api.expect(link).to_have_attribute("href", pr.url)
    assert pr.url.startswith("file:///") and Path(pr.url.removeprefix("file://")).is_file()
    sync_api.expect(metadata_value(page, "pr_show")).to_have_text(
        f"leviathan prs show {pr.number} --target site --patch"
    )
    link.scroll_into_view_if_needed()
    screenshot(page, "attempt-pr-link")


def test_costs_asset_shows_its_table(costs_ui) -> None:
    base, page, _, usd, today = costs_ui
    open_partition(page, f"{base}/assets/costs?view=partitions&partition={today}", "per_target")
    # The day's totals (numbers, plotted across days) and the per-target Markdown table, drawn inline.
    sync_api.expect(metadata_value(page, "cost_usd")).to_have_text(re.compile(rf"^{usd:.4f}"))
    sync_api.expect(metadata_value(page, "attempts")).to_have_text("2")
    sync_api.expect(metadata_value(page, "total_tokens")).to_have_text(str(sum(map(sum, CALLS))))
    table = metadata_value(page, "per_target").locator("table")
    sync_api.expect(table.locator("th")).to_contain_text(["day", "target", "attempts", "USD"])
    cells = table.locator("tbody tr").first.locator("td")
    sync_api.expect(cells).to_contain_text([today, "site", "2", f"${usd:.4f}", "claude: 1, docs: 1"])
    screenshot(page, "costs-partition")


def test_costs_are_plotted_one_point_per_day(costs_ui) -> None:
    base, page, _, _, _ = costs_ui
    open_page(page, f"{base}/assets/costs")
    page.get_by_role("button", name="Plots").first.click(timeout=UI_MS)
    # One chart per numeric entry, by day partition: the totals and each target's.
    for key in ("cost_usd", "total_tokens", "attempts", "cost_usd [site]"):
        chart = page.locator("div", has=page.get_by_text(key, exact=True)).filter(has=page.locator("canvas"))
        sync_api.expect(chart.last).to_be_visible(timeout=UI_MS)
    screenshot(page, "costs-plots")
