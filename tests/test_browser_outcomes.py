"""What an operator sees of a task's outcome in a real browser (the Dagster UI, its daemon running the
real sensors and attempt runs): a failed attempt's partition is failed with its failure type; a PR
closed unmerged, which escalates its task, turns the green partition failed; the readiness table
leaves the escalated task's next attempt blank. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
import time

import dagster as dg
import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, dagster_env, dagster_ui, screenshot
from support import backlog_yaml, docs_task, make_project
from test_browser_ui import open_page, visible_text

from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.forge.local import LocalForge

pytestmark = [pytest.mark.browser, pytest.mark.dagster]
sync_api = pytest.importorskip("playwright.sync_api")
# The daemon's attempt_sensor ticks every 30 s and pr_lifecycle_sensor every 60 s; runs take a while
# on a busy machine.
DEADLINE_SECONDS = 420


def wait_until(what: str, condition) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(2)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (or set LEVIATHAN_CHROMIUM)")
    root = tmp_path_factory.mktemp("outcomes")
    project = make_project(
        root / "project",
        {
            # Its tests always fail: the daemon's first attempt at a fails with tests_failed (and waits
            # an hour before the retry, so the partition stays as the failure left it).
            "flaky": {
                "files": {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"))},
                "test_command": ["false"],
                "policy": {"backoff_seconds": 3600},
            },
            # b's first attempt opens a PR; one counted failure escalates it. One attempt only: between
            # the close on the forge and pr_lifecycle_sensor recording it, the scheduler sees a task
            # with no open PR and would otherwise start attempt 2 at once (a known race, see the report).
            "site": {
                "files": {".leviathan/backlog.yaml": backlog_yaml(docs_task("b"))},
                "policy": {
                    "escalation_after": 1,
                    "max_attempts_per_task": 1,
                    "backoff_seconds": 3600,
                    "circuit_breaker_failures": 5,
                },
            },
        },
    )
    env = dagster_env(root / "dagster", project.config_path, project.home.root)
    with dagster_ui(env, root) as base, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            yield base, page, project, root / "dagster"
        finally:
            browser.close()


def ledger(project) -> AttemptLedger:
    return AttemptLedger.from_events(project.events().read())


def runs_ended(dagster_home, partition: str, job: str) -> bool:
    """Whether a run of ``job`` for ``partition`` ended (the daemon's, seen in its instance)."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        filters = dg.RunsFilter(
            job_name=job,
            tags={"dagster/partition": partition},
            statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE],
        )
        return bool(instance.get_runs(filters=filters, limit=1))


def open_partition(page, base: str, asset: str, partition: str) -> None:
    open_page(page, f"{base}/assets/{asset}?view=partitions&partition={partition.replace('/', '%2F')}")


def test_failed_attempt_partition_shows_failed_with_its_failure_type(outcomes) -> None:
    base, page, project, dagster_home = outcomes
    wait_until("flaky/a failed", lambda: any(a.status == "failed" for a in ledger(project).attempts("flaky")))
    wait_until("its run ended", lambda: runs_ended(dagster_home, "flaky/a", "attempt_job"))
    open_partition(page, base, "attempt_outcomes", "flaky/a")
    sync_api.expect(page.get_by_text("failed, and did not materialize this asset").first).to_be_visible()
    screenshot(page, "outcome-failed-attempt-partition")
    # Never materialized, so the partition's Metadata table (the latest materialization's) is empty in
    # Dagster OSS: the failed run's outcome observation carries the type, in the partition's events.
    open_page(page, f"{base}/assets/attempt_outcomes?view=events&partition=flaky%2Fa")
    sync_api.expect(page.get_by_text("Partition flaky/a observed in run").first).to_be_visible()
    for text in (
        "failure_type",
        "tests_failed",
        "the final test run failed",
        "attempt 1 failed (tests_failed)",
    ):
        sync_api.expect(page.get_by_text(re.compile(re.escape(text))).first).to_be_visible()
    screenshot(page, "outcome-failed-attempt-events")


def test_pr_closed_unmerged_turns_the_partition_failed(outcomes) -> None:
    base, page, project, dagster_home = outcomes
    forge = LocalForge("site", str(project.repo("site")), project.home.root)
    wait_until("site/b opened a PR", lambda: forge.list_pull_requests("open"))
    wait_until("its run ended", lambda: runs_ended(dagster_home, "site/b", "attempt_job"))
    open_partition(page, base, "attempt_outcomes", "site/b")
    sync_api.expect(page.get_by_text("pr_url").first).to_be_visible()
    screenshot(page, "outcome-pr-open")
    [pr] = forge.list_pull_requests("open")
    forge.close_pull_request(pr.number)  # a reviewer rejects the work on the forge
    wait_until("the close is recorded", lambda: ledger(project).task("site", "b").escalated)
    wait_until("the record run ended", lambda: runs_ended(dagster_home, "site/b", "record_task_outcome_job"))
    open_partition(page, base, "attempt_outcomes", "site/b")
    sync_api.expect(page.get_by_text("failed, and did not materialize this asset").first).to_be_visible()
    # The outcome observed after the attempt's materialization heads the partition's Metadata table.
    for text in ("pr_closed", "escalated", "the attempt's PR was closed without merge"):
        sync_api.expect(page.get_by_text(text, exact=True).first).to_be_visible()
    screenshot(page, "outcome-pr-closed-escalated")


def test_readiness_leaves_the_escalated_tasks_next_attempt_blank(outcomes) -> None:
    base, page, project, _ = outcomes
    wait_until("site/b is escalated", lambda: ledger(project).task("site", "b").escalated)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:  # the sensor reports the new readiness on its next tick
        open_partition(page, base, "task_readiness", "site")
        # The readiness table's own row (the metadata table around it has rows too).
        rows = page.locator("tr", has=page.get_by_text("escalated", exact=True))
        row = rows.filter(has_not=page.locator("tr")).filter(visible=True)
        if row.count():
            break
        assert time.monotonic() < deadline, "task_readiness never showed b escalated"
        time.sleep(5)
    cells = [c.strip() for c in row.first.locator("td").all_inner_texts()]
    assert cells[0] == "b" and cells[2] == "escalated", cells
    assert cells[-1] == "", f"next attempt should be blank for an escalated task: {cells}"
    sync_api.expect(visible_text(page, "decided_at")).to_be_visible()
    screenshot(page, "readiness-escalated-next-attempt-blank")
