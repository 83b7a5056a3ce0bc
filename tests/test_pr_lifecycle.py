"""The PR lifecycle: PRs merged or closed outside Leviathan are noticed (local forge and GitHub double),
recorded once, and have their consequences: merged completes the task, closed is a counted failure."""

from __future__ import annotations

import secrets
from pathlib import Path
from types import MappingProxyType

import dagster as dg
import pytest
from github_double import GithubDouble
from support import Project, backlog_yaml, docs_task, make_project, run_worker

from leviathan_dagster.core.attempts import ledger as at
from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.attempts.pr_lifecycle import sync_pull_requests
from leviathan_dagster.core.config.project import load_project_config
from leviathan_dagster.core.events.model import utc_now
from leviathan_dagster.core.forge.github.errors import RetryPolicy
from leviathan_dagster.core.forge.github.forge import GithubForge
from leviathan_dagster.core.forge.local import LocalForge
from leviathan_dagster.core.models import GithubSettings, TargetConfig
from leviathan_dagster.core.scheduling.cycle import read_backlog
from leviathan_dagster.core.scheduling.readiness import evaluate_target
from leviathan_dagster.defs.attempts.pr_sensors import pr_lifecycle_sensor
from leviathan_dagster.defs.platform.resources import LeviathanResource


def attempt_with_pr(project: Project, task_id: str, number: int = 1) -> str:
    """A real attempt: attempt.created (the orchestrator's part), then the worker opens the PR."""
    attempt_id = at.make_attempt_id("site", task_id, number)
    project.events().append(
        [
            lifecycle.attempt_created(
                target_id="site",
                task_id=task_id,
                attempt_id=attempt_id,
                attempt_number=number,
                branch_name=at.branch_name_for(task_id, attempt_id),
                executor="local",
                actor_id="test",
            )
        ]
    )
    proc = run_worker(project, "site", task_id, attempt_id, number)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return attempt_id


@pytest.fixture
def project(tmp_path: Path) -> Project:
    files = {
        ".leviathan/backlog.yaml": backlog_yaml(docs_task("intro"), docs_task("next", dependencies=["intro"]))
    }
    policy = {
        "max_attempts_per_task": 2,
        "circuit_breaker_failures": 1,
        "backoff_seconds": 0,
        "max_open_prs": 5,
    }
    return make_project(tmp_path, {"site": {"files": files, "policy": policy}})


def local(project: Project) -> tuple[TargetConfig, LocalForge]:
    target = load_project_config(project.config_path).target("site")
    return target, LocalForge("site", target.repo_url, project.home.root)


def types(project: Project) -> list[str]:
    return [e.event_type for e in project.events().read()]


def test_merge_outside_leviathan_completes_the_task_once(project) -> None:
    attempt_with_pr(project, "intro")
    target, forge = local(project)
    assert sync_pull_requests(target, forge, project.events()).still_open == [1]
    forge.merge_pull_request(1)  # a reviewer merges on the forge, not through Leviathan
    result = sync_pull_requests(target, forge, project.events())
    assert result.merged == [1]
    assert types(project)[-2:] == ["pr.merged", "task.completed"]
    count = len(types(project))
    assert sync_pull_requests(target, forge, project.events()).merged == []  # nothing recorded twice
    assert len(types(project)) == count
    ledger = AttemptLedger.from_events(project.events().read())
    assert ledger.task("site", "intro").completed
    # The write-back landed on main with the merge: the dependent task is ready in the next cycle.
    backlog = read_backlog(target, project.home).backlog
    readiness = {r.task_id: r for r in evaluate_target(target, backlog, ledger, [], utc_now())}
    assert readiness["next"].ready and readiness["intro"].reason == "status"


def test_close_without_merge_is_a_counted_pr_closed_failure(project) -> None:
    attempt_id = attempt_with_pr(project, "intro")
    target, forge = local(project)
    forge.close_pull_request(1)
    assert sync_pull_requests(target, forge, project.events()).closed == [1]
    ledger = AttemptLedger.from_events(project.events().read())
    record = ledger.attempt(attempt_id)
    assert (record.status, record.failure_type) == ("failed", at.PR_CLOSED)
    assert record.counts_against_task and ledger.task("site", "intro").counted_failures == 1
    assert ledger.target("site").consecutive_failures == 1
    assert types(project)[-3:] == ["pr.closed", "retry.scheduled", "circuit.opened"]
    backlog = read_backlog(target, project.home).backlog
    [intro, _] = evaluate_target(target, backlog, ledger, [], utc_now())
    assert not intro.ready and intro.reason == "circuit_open"
    count = len(types(project))
    sync_pull_requests(target, forge, project.events())
    assert len(types(project)) == count


def test_second_closed_pr_exhausts_the_task(project) -> None:
    target, forge = local(project)
    for number in (1, 2):
        attempt_with_pr(project, "intro", number)
        forge.close_pull_request(number)
        sync_pull_requests(target, forge, project.events())
    completed = [e for e in project.events().read() if e.event_type == "task.completed"]
    assert [e.payload["status"] for e in completed] == ["failed"]
    assert AttemptLedger.from_events(project.events().read()).task("site", "intro").counted_attempts == 2


@pytest.mark.dagster
def test_sensor_records_what_happened_on_the_forge(project) -> None:
    attempt_with_pr(project, "intro")
    _, forge = local(project)
    forge.merge_pull_request(1)
    leviathan = LeviathanResource(config_path=str(project.config_path), home=str(project.home.root))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"leviathan": leviathan})
        result = pr_lifecycle_sensor(context)
    assert "site: 1 merged, 0 closed, 0 open" in result.skip_reason.skip_message
    assert types(project)[-2:] == ["pr.merged", "task.completed"]


def test_github_close_and_draft_until_green_are_noticed(tmp_path: Path) -> None:
    token = "ghp_" + secrets.token_hex(18)
    with GithubDouble(tmp_path / "github") as gh:
        gh.add_repo("acme", "site", {"README.md": "x\n"})
        gh.add_token(token)
        target = TargetConfig(
            id="site",
            repo_url=gh.repo_url("acme", "site"),
            forge="github",
            secret_env=MappingProxyType({"github_token": "T"}),
            github=GithubSettings(api_url=gh.api_url, draft_until_green=True),
        )
        forge = GithubForge(target, {"T": token}, retry=RetryPolicy(attempts=2), seconds_between_writes=0)
        project = make_project(tmp_path / "p", {})
        repo = gh.state.repos["acme/site"]
        for n, task in enumerate(("a", "b"), start=1):
            head_tree = gh.state.git(repo, "rev-parse", "main^{tree}").stdout.strip()
            commit = gh.state.git(repo, "commit-tree", "-p", "main", "-m", task, head_tree).stdout.strip()
            gh.state.git(repo, "update-ref", f"refs/heads/agent/{task}-1", commit)
            pr = forge.open_pull_request(
                head=f"agent/{task}-1", base="main", title=task, body=f"<!-- leviathan-task: site/{task} -->"
            )
            assert pr.draft and pr.number == n
            attempt_id = f"attempt-{task}"
            project.events().append(
                [
                    lifecycle.attempt_created(
                        target_id="site",
                        task_id=task,
                        attempt_id=attempt_id,
                        attempt_number=1,
                        branch_name=pr.head,
                        executor="local",
                        actor_id="test",
                    ),
                    lifecycle.pr_created(
                        attempt_id=attempt_id,
                        target_id="site",
                        task_id=task,
                        pr_number=pr.number,
                        pr_url=pr.url,
                        branch_name=pr.head,
                        actor_id="test",
                    ),
                    lifecycle.attempt_succeeded(
                        attempt_id=attempt_id, target_id="site", task_id=task, actor_id="t"
                    ),
                ]
            )
        # CI reports green on a's head; b stays pending. A human closes b on GitHub.
        sha = gh.state.branch_sha(repo, "agent/a-1")
        gh.rest.create_status(
            gh.state.tokens[token], "acme", "site", sha, query={}, body={"state": "success", "context": "ci"}
        )
        gh.rest.update_pull(gh.state.tokens[token], "acme", "site", "2", query={}, body={"state": "closed"})
        result = sync_pull_requests(target, forge, project.events())
        assert result.ready_for_review == [1] and result.closed == [2] and result.still_open == [1]
        assert [p.draft for p in gh.pulls("acme", "site")] == [False, True]
        record = AttemptLedger.from_events(project.events().read()).attempt("attempt-b")
        assert record.failure_type == at.PR_CLOSED
        forge.close()
