"""The one planning API: run keys and tags, refused runs, the run-time re-check and the cancel flow,
over real git repositories and real event logs (no Dagster)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from support import backlog_yaml, docs_task, make_project

from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.attempts import operator as op
from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.errors import NotFoundError
from leviathan_dagster.core.events.model import Event, utc_now
from leviathan_dagster.core.models import ResourceRequests
from leviathan_dagster.core.scheduling.planning import (
    AttemptRequest,
    NotAttempted,
    plan_attempt_requests,
    recheck_before_attempt,
)


class Runs:
    """The orchestrator's side of RunView, as plain data."""

    def __init__(self, alive=(), queued=None, ended=None) -> None:
        self.alive, self.queued, self.ended = set(alive), queued or {}, ended or {}

    def is_alive(self, run_id: str) -> bool:
        return run_id in self.alive

    def live_unrecorded_tasks(self, ledger, exclude_run=None):
        return {t: frozenset(tasks) for t, tasks in self.queued.items()}

    def ended_run_ids(self, target_id, task_id, attempt_number):
        return list(self.ended.get((target_id, task_id, attempt_number), []))


@pytest.fixture
def project(tmp_path: Path):
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"), docs_task("b"))}
    return make_project(
        tmp_path, {"site": {"files": files, "policy": {"max_running_attempts": 2, "max_open_prs": 2}}}
    )


def created(task_id: str, number: int, run_id: str, **at) -> Event:
    return lifecycle.attempt_created(
        target_id="site",
        task_id=task_id,
        attempt_id=f"{task_id}-{number}",
        attempt_number=number,
        branch_name="b",
        executor="local",
        actor_id="t",
        run_id=run_id,
        **at,
    )


def test_request_keys_and_tags() -> None:
    plain = AttemptRequest("site", "a", 2)
    assert (plain.partition_key, plain.run_key) == ("site/a", "site/a:2")
    assert plain.tags == {"leviathan/target": "site", "leviathan/task": "a", "leviathan/attempt": "2"}
    sized = AttemptRequest("site", "a", 2, relaunch=1, resources=ResourceRequests(cpu="2", memory="1Gi"))
    assert sized.run_key == "site/a:2+1"
    assert "resources" in json.loads(sized.tags["dagster-k8s/config"])["container_config"]


def test_plan_counts_refused_runs_and_queued_tasks(project) -> None:
    config = load_project_config(project.config_path)
    runs = Runs(queued={"site": {"a"}}, ended={("site", "b", 1): ["refused-run"]})
    plan, requests = plan_attempt_requests(config, project.home, project.events(), utc_now(), runs)
    # a is queued (its run has not written attempt.created yet): only b, keyed past its spent key.
    assert [r.run_key for r in requests] == ["site/b:1+1"]
    assert [r.reason for r in plan.snapshots["site"].readiness if r.task_id == "a"] == ["in_progress"]


def test_recheck_skips_only_the_backoff_and_applies_the_global_limit_for_run_now(project) -> None:
    events, target = project.events(), project.target("site")
    failed_at = utc_now() - timedelta(seconds=5)
    events.append(
        [
            created("a", 1, "r1", at=failed_at),
            Event.new(
                "attempt.failed",
                {"attempt_id": "a-1", "target_id": "site", "task_id": "a", "failure_type": "tests_failed"},
                actor_id="t",
            ),
        ]
    )
    ledger = AttemptLedger.from_events(events.read())
    verdict = recheck_before_attempt(
        target, project.home, ledger, utc_now(), Runs(), task_id="a", run_id="me"
    )
    assert verdict.ready and verdict.next_attempt_number == 2  # in backoff, judged at its end
    with pytest.raises(NotAttempted) as caught:
        recheck_before_attempt(
            target,
            project.home,
            ledger,
            utc_now(),
            Runs(queued={"site": {"b"}}),
            task_id="a",
            run_id="me",
            global_limit=(1, ["site"]),
        )
    assert caught.value.reason == "global_limit"
    with pytest.raises(NotFoundError, match="no task 'zz'"):
        recheck_before_attempt(target, project.home, ledger, utc_now(), Runs(), task_id="zz", run_id="me")


def test_cancel_flow_records_the_request_stops_the_run_and_ends_the_attempt(project) -> None:
    events, target = project.events(), project.target("site")
    events.append([created("a", 1, "r1")])
    stopped, cleaned = [], []
    outcome = op.cancel_attempt(
        events,
        target,
        "a",
        "ada",
        reason="wrong task",
        pause_target=True,
        terminate_run=lambda run_id: stopped.append(run_id) or True,
        cleanup=cleaned.append,
    )
    assert (outcome.terminated, stopped, cleaned) == (True, ["r1"], ["a-1"])
    kinds = [e.event_type for e in events.read()][1:]
    assert kinds == ["attempt.cancel_requested", "attempt.failed", "target.paused"]
    [record] = AttemptLedger.from_events(events.read()).attempts("site")
    assert (record.status, record.failure_type) == ("failed", "infrastructure")
    with pytest.raises(NotFoundError, match="no attempt in flight"):
        op.cancel_attempt(events, target, "a", "ada", terminate_run=stopped.append, cleanup=cleaned.append)
