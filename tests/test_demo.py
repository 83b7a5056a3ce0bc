"""The README's main command: the demo end to end, checked against what the issue promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO_ROOT

from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog

pytestmark = pytest.mark.dagster


def leviathan(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "leviathan_dagster.cli", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("demo") / "home"
    out = leviathan(home, "demo").stdout
    return home, out


def test_readme_shows_the_two_commands() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()


def test_demo_opens_prs_with_generated_files_and_write_back(demo) -> None:
    home, out = demo
    repo = home / "demo" / "docs-site.git"
    branches = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/agent").split()
    assert len(branches) == 3
    for branch in branches:
        task = branch.removeprefix("agent/").rsplit("-attempt-", 1)[0]
        backlog = git(repo, "show", f"{branch}:.leviathan/backlog.yaml")
        block = backlog.split(f"- id: {task}", 1)[1].split("- id:", 1)[0]
        assert "status: completed" in block and "ready: false" in block and f"branch_name: {branch}" in block
    assert "# Write the getting-started guide" in git(repo, "show", "main:docs/getting-started.md")
    assert "assert textutil.slugify" in git(repo, "show", "main:tests/test_slugify_tests.py")
    assert "event chain: verified" in out


def test_out_of_scope_never_attempted_dependent_after_merge_retry_after_backoff(demo) -> None:
    home, out = demo
    events = list(NdjsonEventLog(home / "events" / "events.ndjson").read())
    attempted = {e.payload["task_id"] for e in events if e.event_type == "attempt.created"}
    assert "deploy-script" not in attempted and "changelog" not in attempted
    assert "deploy-script    out_of_scope" in out

    def seq(kind: str, **match) -> int:
        return next(e.seq for e in events if e.event_type == kind and match.items() <= e.payload.items())

    merged_dependency = seq("task.completed", task_id="getting-started", status="completed")
    assert seq("attempt.created", task_id="api-reference") > merged_dependency

    ledger = AttemptLedger.from_events(events)
    attempts = ledger.task("docs-site", "slugify-tests").attempts
    assert len(attempts) == 2, [(a.number, a.status, a.failure_type, a.error_summary) for a in attempts]
    first, second = attempts
    assert (first.status, first.failure_type, second.status) == ("failed", "tests_failed", "succeeded")
    backoff = next(e for e in events if e.event_type == "retry.scheduled")
    assert backoff.payload["retry_number"] == 2
    assert second.created_at >= backoff.payload["scheduled_at"]


def test_events_verify_passes_and_a_flipped_byte_fails_at_that_event(demo, tmp_path) -> None:
    home, _ = demo
    assert "chain verified" in leviathan(home, "events", "verify").stdout
    copy = tmp_path / "home"
    subprocess.run(["cp", "-r", str(home), str(copy)], check=True)
    log = copy / "events" / "events.ndjson"
    lines = log.read_bytes().splitlines(keepends=True)
    target = 7  # seq 7
    line = bytearray(lines[target - 1])
    at = line.index(b'"actor_id":"') + len(b'"actor_id":"')
    line[at] ^= 0x01
    lines[target - 1] = bytes(line)
    log.write_bytes(b"".join(lines))
    broken = leviathan(copy, "events", "verify", check=False)
    assert broken.returncode == 1 and "seq 7" in broken.stdout


def test_demo_is_safe_to_rerun(demo) -> None:
    home, _ = demo
    again = leviathan(home, "demo").stdout
    assert "event chain: verified" in again
