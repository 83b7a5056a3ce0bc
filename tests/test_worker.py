"""The worker, run for real as ``python -m worker`` against a bare repository and the local forge."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import Project, backlog_yaml, docs_task, make_project, run_worker

from leviathan_dagster.core.attempts.markers import render_task_marker
from leviathan_dagster.core.forge.local import LocalForge
from worker.attempt import EXIT_CODES

PY = sys.executable


def project_with(tmp_path: Path, *tasks: dict, files: dict | None = None, **target) -> Project:
    repo_files = {".leviathan/backlog.yaml": backlog_yaml(*tasks), "README.md": "# target\n", **(files or {})}
    policy = {"allowed_path_prefixes": [".leviathan/", "docs/", "tests/"], **target.pop("policy", {})}
    return make_project(tmp_path, {"site": {"files": repo_files, "policy": policy, **target}})


def failure_of(project: Project, attempt_id: str) -> tuple[str | None, str | None]:
    events = [e for e in project.events().read() if e.payload.get("attempt_id") == attempt_id]
    failed = [e for e in events if e.event_type == "attempt.failed"]
    assert len(failed) == 1, [e.event_type for e in events]
    return failed[0].payload["failure_type"], failed[0].payload["error_summary"]


def assert_nothing_pushed(project: Project) -> None:
    assert project.branches("site") == ["main"]
    assert LocalForge("site", str(project.repo("site")), project.home.root).list_pull_requests("all") == []


def test_success_pushes_branch_with_change_and_write_back_and_opens_pr(tmp_path: Path) -> None:
    project = project_with(tmp_path, docs_task("intro"), docs_task("other"))
    proc = run_worker(project, "site", "intro", "attempt-abc")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    branch = "agent/intro-attempt-abc"
    assert branch in project.branches("site")
    assert "# Write intro" in project.show("site", branch, "docs/intro.md")
    backlog = project.show("site", branch, ".leviathan/backlog.yaml")
    assert "status: completed" in backlog and "attempt_id: attempt-abc" in backlog
    assert f"branch_name: {branch}" in backlog
    log = subprocess.run(
        ["git", "log", "-1", "--format=%B", branch], cwd=project.repo("site"), capture_output=True, text=True
    ).stdout
    assert "Leviathan-Task: intro" in log and "Leviathan-Attempt: attempt-abc" in log

    [pr] = LocalForge("site", str(project.repo("site")), project.home.root).list_pull_requests("open")
    assert pr.head == branch and pr.base == "main"
    assert render_task_marker("site", "intro") in pr.body
    assert "- [ ] It exists" in pr.body and "`docs/intro.md` added" in pr.body

    types = [e.event_type for e in project.events().read()]
    assert types == ["attempt.started", "pr.created", "attempt.succeeded"]
    succeeded = list(project.events().read())[-1].payload
    assert succeeded["pr_number"] == pr.number and succeeded["touched_paths"] == ["docs/intro.md"]
    # No model call, and the log says so (a usage of zero, named for its generator).
    assert succeeded["generator"] == "docs"
    assert {k: succeeded["usage"][k] for k in ("generator", "calls", "input_tokens", "output_tokens")} == {
        "generator": "docs",
        "calls": 0,
        "input_tokens": 0,
        "output_tokens": 0,
    }
    assert pr.url == succeeded["pr_url"] and Path(pr.url.removeprefix("file://")).is_file()
    # Every artifact is listed with the SHA-256 of its bytes.
    artifacts = project.home.artifacts_dir("attempt-abc")
    for entry in succeeded["artifacts"]:
        assert hashlib.sha256((artifacts / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]
    assert {"worker.log", "diff.patch", "generator.json", "result.json"} <= {
        a["name"] for a in succeeded["artifacts"]
    }
    assert not (project.home.workspaces / "attempt-abc").exists()


def test_change_outside_target_prefixes_is_policy_violation_and_nothing_pushed(tmp_path: Path) -> None:
    project = project_with(tmp_path, docs_task("intro"), policy={"allowed_path_prefixes": ["tests/"]})
    proc = run_worker(project, "site", "intro", "attempt-pv")
    assert proc.returncode == EXIT_CODES["policy_violation"]
    failure_type, summary = failure_of(project, "attempt-pv")
    assert failure_type == "policy_violation" and "docs/intro.md" in summary
    assert_nothing_pushed(project)
    # A failed attempt records its usage too: the docs generator's explicit zero, not nothing.
    [failed] = [e for e in project.events().read() if e.event_type == "attempt.failed"]
    usage = failed.payload["usage"]
    assert usage["generator"] == "docs" and usage["calls"] == 0 and usage["total_tokens"] == 0


def test_empty_diff_is_no_changes_never_green(tmp_path: Path) -> None:
    first = project_with(tmp_path / "a", docs_task("intro"))
    assert run_worker(first, "site", "intro", "attempt-1").returncode == 0
    existing = first.show("site", "agent/intro-attempt-1", "docs/intro.md")
    # The same document already on main: the generator changes nothing.
    project = project_with(tmp_path / "b", docs_task("intro"), files={"docs/intro.md": existing})
    proc = run_worker(project, "site", "intro", "attempt-nc")
    assert proc.returncode == EXIT_CODES["no_changes"]
    assert failure_of(project, "attempt-nc")[0] == "no_changes"
    assert_nothing_pushed(project)


def test_failing_test_command_is_tests_failed(tmp_path: Path) -> None:
    project = project_with(
        tmp_path, docs_task("intro"), test_command=[PY, "-c", "import sys; print('boom'); sys.exit(3)"]
    )
    proc = run_worker(project, "site", "intro", "attempt-tf")
    assert proc.returncode == EXIT_CODES["tests_failed"]
    failure_type, summary = failure_of(project, "attempt-tf")
    assert failure_type == "tests_failed" and "exited 3" in summary and "boom" in summary
    assert_nothing_pushed(project)


def test_test_command_gets_no_credentials_and_its_files_are_not_committed(tmp_path: Path) -> None:
    script = (
        "import os, pathlib, sys; open('docs/intro.md', 'a').write('tampered by the tests'); "
        "sys.exit(1 if any(k in os.environ for k in ('GITHUB_TOKEN', 'LEVIATHAN_CLAUDE_API_KEY')) else 0)"
    )
    project = project_with(tmp_path, docs_task("intro"), test_command=[PY, "-c", script])
    proc = run_worker(
        project, "site", "intro", "attempt-env", GITHUB_TOKEN="ghs_secret", LEVIATHAN_CLAUDE_API_KEY="k"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", "agent/intro-attempt-env"],
        cwd=project.repo("site"),
        capture_output=True,
        text=True,
    ).stdout.split()
    assert "docs/intro.md" in files
    assert "tampered" not in project.show("site", "agent/intro-attempt-env", "docs/intro.md")
    # What the test command changed after the policy check is recorded, then discarded.
    discarded = json.loads((project.home.artifacts_dir("attempt-env") / "discarded.json").read_text())
    assert discarded == {"after_policy_check": ["docs/intro.md"]}


def test_test_command_past_the_attempt_timeout_is_timeout(tmp_path: Path) -> None:
    project = project_with(
        tmp_path,
        docs_task("intro"),
        test_command=[PY, "-c", "import time; time.sleep(30)"],
        policy={"attempt_timeout_seconds": 1},
    )
    proc = run_worker(project, "site", "intro", "attempt-to")
    assert proc.returncode == EXIT_CODES["timeout"]
    assert failure_of(project, "attempt-to")[0] == "timeout"
    assert_nothing_pushed(project)


@pytest.mark.parametrize(
    ("task", "task_id", "needle"),
    [
        (
            {
                "id": "t",
                "title": "T",
                "ready": True,
                "generator": "tests",
                "allowed_paths": ["tests/"],
                "acceptance_criteria": ["it works well"],
            },
            "t",
            # A backlog that validation refuses, even when it reaches a worker, costs no model or push.
            "('it works well') is not a Python expression",
        ),
        (docs_task("intro"), "missing-task", "missing-task"),
    ],
)
def test_generator_or_task_errors_are_executor_error(
    tmp_path: Path, task: dict, task_id: str, needle: str
) -> None:
    project = project_with(tmp_path, task)
    proc = run_worker(project, "site", task_id, "attempt-ee")
    assert proc.returncode == EXIT_CODES["executor_error"]
    failure_type, summary = failure_of(project, "attempt-ee")
    assert failure_type == "executor_error" and needle in summary


def test_unreachable_repository_is_infrastructure(tmp_path: Path) -> None:
    project = project_with(tmp_path, docs_task("intro"))
    proc = run_worker(project, "site", "intro", "attempt-inf", TARGET_REPO_URL=str(tmp_path / "gone.git"))
    assert proc.returncode == EXIT_CODES["infrastructure"]
    assert failure_of(project, "attempt-inf")[0] == "infrastructure"


def test_result_file_matches_the_events(tmp_path: Path) -> None:
    project = project_with(tmp_path, docs_task("intro"))
    run_worker(project, "site", "intro", "attempt-r")
    result = json.loads((project.home.artifacts_dir("attempt-r") / "result.json").read_text())
    assert result["status"] == "succeeded" and result["branch_name"] == "agent/intro-attempt-r"


def test_missing_environment_names_the_variables(tmp_path: Path) -> None:
    proc = subprocess.run([PY, "-m", "worker"], env={"PATH": "/usr/bin"}, capture_output=True, text=True)
    assert proc.returncode == 2 and "TARGET_NAME" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreachable_control_plane_is_infrastructure_and_nothing_is_pushed(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    project = project_with(tmp_path, docs_task("intro"))
    proc = run_worker(
        project,
        "site",
        "intro",
        "attempt-cp",
        CONTROL_PLANE_URL=f"http://127.0.0.1:{port}",
        CONTROL_PLANE_TOKEN="t",
    )
    assert proc.returncode == EXIT_CODES["infrastructure"]
    assert "cannot record attempt.started" in proc.stderr and "Traceback" not in proc.stderr
    assert_nothing_pushed(project)


def _artifact_names(project: Project, attempt_id: str) -> set[str]:
    [failed] = [
        e
        for e in project.events().read()
        if e.event_type == "attempt.failed" and e.payload["attempt_id"] == attempt_id
    ]
    return {a["name"] for a in failed.payload["artifacts"]}


@pytest.mark.parametrize(
    ("failure", "target"),
    [
        ("policy_violation", {"policy": {"allowed_path_prefixes": ["tests/"]}}),
        ("tests_failed", {"test_command": [PY, "-c", "import sys; sys.exit(3)"]}),
        (
            "timeout",
            {
                "test_command": [PY, "-c", "import time; time.sleep(30)"],
                "policy": {"attempt_timeout_seconds": 1},
            },
        ),
    ],
)
def test_a_failed_attempt_that_changed_something_keeps_its_diff(
    tmp_path: Path, failure: str, target: dict
) -> None:
    project = project_with(tmp_path, docs_task("intro"), **target)
    proc = run_worker(project, "site", "intro", "attempt-fd")
    assert proc.returncode == EXIT_CODES[failure], proc.stdout + proc.stderr
    assert failure_of(project, "attempt-fd")[0] == failure
    assert "diff.patch" in _artifact_names(project, "attempt-fd")
    patch = (project.home.artifacts_dir("attempt-fd") / "diff.patch").read_text()
    assert "+++ b/docs/intro.md" in patch and "+# Write intro" in patch
    assert_nothing_pushed(project)


def test_no_change_leaves_no_diff(tmp_path: Path) -> None:
    first = project_with(tmp_path / "a", docs_task("intro"))
    assert run_worker(first, "site", "intro", "attempt-1").returncode == 0
    existing = first.show("site", "agent/intro-attempt-1", "docs/intro.md")
    project = project_with(tmp_path / "b", docs_task("intro"), files={"docs/intro.md": existing})
    assert run_worker(project, "site", "intro", "attempt-nc").returncode == EXIT_CODES["no_changes"]
    assert "diff.patch" not in _artifact_names(project, "attempt-nc")
