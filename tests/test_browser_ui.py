"""The operator's cockpit in a real browser: the Dagster UI (webserver + daemon on a temporary instance)
shows the lineage with its groups, a task's attempts, a failed backlog check, and runs "run a task now"
from the launchpad through to a PR in the local forge. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import dagster as dg
import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, dagster_env, dagster_ui, open_page, screenshot
from support import backlog_yaml, docs_task, make_project

from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.forge.local import LocalForge
from leviathan_dagster.definitions import build_definitions
from leviathan_dagster.defs.backlogs.partitions import targets_partitions
from leviathan_dagster.defs.platform.resources import LeviathanResource

pytestmark = [pytest.mark.browser, pytest.mark.dagster]
sync_api = pytest.importorskip("playwright.sync_api")
RUN_DEADLINE_MS = 180_000


def seed_failed_attempt(project, ago: timedelta) -> None:
    """Attempt 1 of site/a failed a moment ago: the scheduler waits out the hour-long backoff, which is
    exactly the wait "run a task now" may skip (and keeps the daemon's sensor from racing the test)."""
    ids = {"target_id": "site", "task_id": "a", "attempt_id": "attempt-seeded-1"}
    at = utc_now() - ago
    project.events().append(
        [
            lifecycle.attempt_created(
                **ids, attempt_number=1, branch_name="agent/a-seeded", executor="local", actor_id="t", at=at
            ),
            lifecycle.attempt_failed(
                **ids, failure_type="tests_failed", error_summary="seeded", actor_id="t"
            ),
        ]
    )


def visible_text(page, text: str):
    # The UI keeps hidden copies of labels (text measurement); only the drawn one counts.
    return page.get_by_text(text, exact=True).filter(visible=True).last


@pytest.fixture(scope="module")
def cockpit(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (or set LEVIATHAN_CHROMIUM)")
    root = tmp_path_factory.mktemp("cockpit")
    site = backlog_yaml(docs_task("a"), docs_task("b", dependencies=["a"]))
    project = make_project(
        root / "project",
        {
            "site": {"files": {".leviathan/backlog.yaml": site}, "policy": {"backoff_seconds": 3600}},
            "broken": {"files": {".leviathan/backlog.yaml": "tasks:\n  - id: x\n    title: no paths\n"}},
        },
    )
    seed_failed_attempt(project, timedelta(seconds=5))
    env = dagster_env(root / "dagster", project.config_path, project.home.root)
    resource = LeviathanResource(config_path=str(project.config_path), home=str(project.home.root))
    with dg.DagsterInstance.from_config(str(root / "dagster")) as instance:
        instance.add_dynamic_partitions(targets_partitions.name, ["site", "broken"])
        refresh = build_definitions(resource).resolve_job_def("refresh_backlogs_job")
        for target in ("site", "broken"):
            refresh.execute_in_process(instance=instance, partition_key=target, raise_on_error=False)
    with dagster_ui(env, root) as base, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            yield base, page, project
        finally:
            browser.close()


def test_asset_graph_shows_lineage_with_groups(cockpit) -> None:
    base, page, _ = cockpit
    open_page(page, f"{base}/asset-groups")
    groups = ("backlogs", "readiness", "attempts")
    for group in groups:
        sync_api.expect(visible_text(page, group)).to_be_visible()
    # Groups start collapsed; "Expand all groups" (graph settings menu, shortcut Alt+E) opens them.
    page.keyboard.press("Alt+e")
    for name in ("backlog", "task_readiness", "attempt_outcomes", *groups):
        sync_api.expect(visible_text(page, name)).to_be_visible()
    # Lineage runs left to right: backlog, then task_readiness, then attempt_outcomes.
    xs = [
        visible_text(page, n).bounding_box()["x"] for n in ("backlog", "task_readiness", "attempt_outcomes")
    ]
    assert xs == sorted(xs), xs
    screenshot(page, "asset-graph")


def test_failed_backlog_check_is_visible(cockpit) -> None:
    base, page, _ = cockpit
    open_page(page, f"{base}/assets/backlog?view=checks")
    visible_text(page, "backlog_is_valid").click()
    # The daemon's backlog_sensor finds these backlogs recorded at their version and runs nothing; had
    # it re-checked one, that run would fail the same way once it ended.
    sync_api.expect(page.get_by_text(re.compile("Failed")).first).to_be_visible(timeout=120_000)
    # The check's metadata names the file, line, field and fix.
    sync_api.expect(page.get_by_text(re.compile("required field 'ready' is missing")).first).to_be_visible()
    screenshot(page, "backlog-check-failed")


def test_run_task_now_from_the_launchpad_opens_a_pr(cockpit) -> None:
    base, page, project = cockpit
    open_page(page, f"{base}/locations/leviathan/jobs/run_task_now_job/playground")
    editor = page.locator(".CodeMirror").first
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(
        "ops: {run_task_now: {config: {target: site, task: a, operator: browser-test, reason: demo}}}"
    )
    screenshot(page, "launchpad-run-task-now")
    launch = page.get_by_role("button", name=re.compile("Launch run", re.I))
    sync_api.expect(launch).to_be_enabled(timeout=60_000)  # once the config has been validated
    launch.click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]+"), timeout=60_000)
    sync_api.expect(page.get_by_text(re.compile("^Success$")).first).to_be_visible(timeout=RUN_DEADLINE_MS)
    [pr] = LocalForge("site", str(project.repo("site")), project.home.root).list_pull_requests("open")
    sync_api.expect(page.get_by_text(pr.url).first).to_be_visible()
    screenshot(page, "run-task-now-run")


def test_task_partition_shows_its_attempts(cockpit) -> None:
    base, page, project = cockpit
    deadline = time.monotonic() + 30
    while not LocalForge("site", str(project.repo("site")), project.home.root).list_pull_requests("open"):
        assert time.monotonic() < deadline, "run-now did not open a PR (its test must run first)"
        time.sleep(1)
    open_page(page, f"{base}/assets/attempt_outcomes?view=partitions&partition=site%2Fa")
    sync_api.expect(page.get_by_text("site/a").first).to_be_visible()
    sync_api.expect(page.get_by_text("pr_url").first).to_be_visible()
    sync_api.expect(page.get_by_text("attempt_number").first).to_be_visible()
    screenshot(page, "task-partition-attempts")
