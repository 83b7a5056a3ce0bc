"""Every acknowledged fact survives a fault: what a worker did but could not record is recovered from
the forge (its PR) or its result.json before the attempt is declared lost. Real worker subprocesses,
a real control plane over uvicorn, the real local forge (bare git repository)."""

from __future__ import annotations

import errno
import json
import tempfile
from pathlib import Path

import click
import pytest
import sqlalchemy
from click.testing import CliRunner
from support import backlog_yaml, docs_task, make_project, run_worker
from test_control_plane import TOKEN, serving

from leviathan_dagster.cli.main import LeviathanGroup
from leviathan_dagster.control_plane import create_app
from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.attempts.recovery import LostAttempt, recover_outcome
from leviathan_dagster.core.attempts.runner import (
    PlannedAttempt,
    execute_attempt,
    reconcile_lost_attempts,
    recovery_for,
)
from leviathan_dagster.core.errors import TransientError
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.executors.local import LocalExecutor
from leviathan_dagster.core.forge.registry import forge_for
from worker.event_sink import ControlPlaneSink

ATTEMPT = "attempt-kill"


class _LosesTheLastBundle(NdjsonEventLog):
    """A store that goes away for good just after the worker opened its PR (its database died)."""

    def append(self, events):  # type: ignore[override]
        if any(e.event_type == "attempt.succeeded" for e in events):
            raise TransientError("database is restarting")
        return super().append(events)


def created(run_id: str | None = "run-1") -> object:
    return lifecycle.attempt_created(
        target_id="site",
        task_id="intro",
        attempt_id=ATTEMPT,
        attempt_number=1,
        branch_name=f"agent/intro-{ATTEMPT}",
        executor="local",
        actor_id="scheduler",
        run_id=run_id,
    )


def test_a_worker_that_opened_its_pr_but_could_not_record_it_is_recovered_from_the_forge(
    tmp_path: Path,
) -> None:
    repo_files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("intro")), "README.md": "# target\n"}
    project = make_project(tmp_path / "project", {"site": {"files": repo_files}})
    store = _LosesTheLastBundle(tmp_path / "cp" / "events.ndjson")
    with serving(create_app(store, token=TOKEN)) as url:
        assert ControlPlaneSink(url, TOKEN, "site", "sched").append([created()]) == [1]
        proc = run_worker(project, "site", "intro", ATTEMPT, CONTROL_PLANE_URL=url, CONTROL_PLANE_TOKEN=TOKEN)
    assert proc.returncode != 0  # the worker could not record its success ...
    target = project.target("site")
    [pull] = forge_for(target, project.home).list_pull_requests("open")  # ... but its PR is open
    assert pull.head == f"agent/intro-{ATTEMPT}"
    log = NdjsonEventLog(store.path)
    assert AttemptLedger.from_events(log.read()).attempt(ATTEMPT).in_flight

    # The run is gone: reconciliation asks the forge before declaring the attempt lost.
    lost = reconcile_lost_attempts(
        AttemptLedger.from_events(log.read()),
        lambda run: False,
        log,
        recovery_for({"site": target}, project.home),
    )
    assert lost == []
    record = AttemptLedger.from_events(log.read()).attempt(ATTEMPT)
    assert (record.status, record.pr_number, record.pr_url) == ("succeeded", pull.number, pull.url)
    types = [e.event_type for e in log.read()]
    assert types == ["attempt.created", "attempt.started", "pr.created", "attempt.succeeded"]
    # Asking again changes nothing: the attempt is settled, and the recovered events are idempotent.
    assert reconcile_lost_attempts(AttemptLedger.from_events(log.read()), lambda run: False, log) == []
    assert log.verify().ok and len(list(log.read())) == 4


def test_result_json_is_replayed_for_a_failure_and_never_believed_for_a_success(tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "project",
        {"site": {"files": {".leviathan/backlog.yaml": backlog_yaml(docs_task("intro"))}}},
    )
    forge = forge_for(project.target("site"), project.home)
    attempt = LostAttempt("site", "intro", ATTEMPT, 1)
    artifacts = project.home.artifacts_dir(ATTEMPT)
    artifacts.mkdir(parents=True, exist_ok=True)
    result = artifacts / "result.json"

    result.write_text(json.dumps({"status": "failed", "failure_type": "tests_failed", "summary": "2 failed"}))
    [event] = recover_outcome(attempt, project.home, forge)
    assert (event.event_type, event.payload["failure_type"], event.payload["recovered_from"]) == (
        "attempt.failed",
        "tests_failed",
        "result.json",
    )
    assert "usage" not in event.payload  # no usage.json: nothing is made up
    # What the worker spent before it died comes along with the replayed failure.
    (artifacts / "usage.json").write_text(json.dumps({"calls": 3, "input_tokens": 90, "per_call": [{}]}))
    [event] = recover_outcome(attempt, project.home, forge)
    assert event.payload["usage"] == {"calls": 3, "input_tokens": 90}
    (artifacts / "usage.json").unlink()
    # The file is the worker's: an unknown failure type becomes infrastructure, not whatever it says.
    result.write_text(json.dumps({"status": "failed", "failure_type": "success!", "summary": 7}))
    [event] = recover_outcome(attempt, project.home, forge)
    assert (event.payload["failure_type"], event.payload["error_summary"]) == ("infrastructure", "")
    # A claimed success without a PR on the forge is not a success.
    result.write_text(json.dumps({"status": "succeeded", "pr_number": 1, "pr_url": "http://x/1"}))
    assert recover_outcome(attempt, project.home, forge) == []
    result.write_text("not json")
    assert recover_outcome(attempt, project.home, forge) == []


def _database_full_error() -> Exception:
    """A real 'database or disk is full' from SQLite through SQLAlchemy (as Dagster's storage raises it),
    made by capping the database at three pages."""
    engine = sqlalchemy.create_engine(f"sqlite:///{tempfile.mkdtemp()}/dagster.db")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE runs (body BLOB)")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA max_page_count=3")
            conn.exec_driver_sql("INSERT INTO runs VALUES (randomblob(100000))")
    except sqlalchemy.exc.OperationalError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("SQLite accepted the insert")


@pytest.mark.parametrize("fault", ["database full", "disk full"])
def test_a_full_disk_or_database_is_one_clear_line_not_a_traceback(fault: str) -> None:
    error = _database_full_error() if fault == "database full" else OSError(errno.ENOSPC, "No space left")

    @click.group(cls=LeviathanGroup)
    def group() -> None: ...

    @group.command()
    def cycle() -> None:
        raise RuntimeError("the cycle failed") from error

    result = CliRunner().invoke(group, ["cycle"])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    expected = "database or disk is full" if fault == "database full" else "disk full: [Errno 28]"
    assert line.startswith("error: ") and expected in line and "Fix: " in line
    assert "Traceback" not in result.output


def test_execute_attempt_records_the_pr_its_worker_opened_but_could_not_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The orchestrator's own path (a Dagster attempt run): the local executor's worker opens its PR,
    # then loses its event store for good (here: the control plane it posts to stops accepting its
    # result). Before recording the attempt as lost, execute_attempt asks the forge.
    repo_files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("intro")), "README.md": "# target\n"}
    project = make_project(tmp_path / "project", {"site": {"files": repo_files}})
    target = project.target("site")
    log = project.events()
    with serving(create_app(_LosesTheLastBundle(tmp_path / "cp" / "events.ndjson"), token=TOKEN)) as url:
        monkeypatch.setenv("CONTROL_PLANE_URL", url)
        monkeypatch.setenv("CONTROL_PLANE_TOKEN", TOKEN)
        record = execute_attempt(
            PlannedAttempt(target, "intro", 1), project.home, project.config_path, LocalExecutor(), log
        )
    [pull] = forge_for(target, project.home).list_pull_requests("open")
    assert (record.status, record.pr_number, record.failure_type) == ("succeeded", pull.number, None)
    succeeded = [e for e in log.read() if e.event_type == "attempt.succeeded"]
    assert [e.payload["recovered_from"] for e in succeeded] == ["forge"]
    assert log.verify().ok
