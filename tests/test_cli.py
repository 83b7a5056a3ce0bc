"""The `leviathan` command: help with examples, exit codes, validate, init, prs, events, tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import Project, backlog_yaml, docs_task, make_project, run_worker

from leviathan_dagster.cli.main import cli


def invoke(project: Project, *args: str):
    runner = CliRunner()
    return runner.invoke(
        cli,
        ["--config", str(project.config_path), "--home", str(project.home.root), *args],
        catch_exceptions=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Project:
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"), docs_task("b", dependencies=["a"]))}
    return make_project(tmp_path, {"site": {"files": files}})


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["init"],
        ["validate"],
        ["run"],
        ["tasks"],
        ["events", "tail"],
        ["events", "verify"],
        ["prs", "list"],
        ["prs", "merge"],
        ["costs"],
        ["target", "pause"],
        ["target", "reset-breaker"],
        ["task", "clear-escalation"],
        ["demo"],
    ],
)
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    if command and command[0] not in ("events", "prs", "target", "task") or len(command) > 1:
        assert "Example:" in result.output


def test_validate_ok_and_invalid_backlog_exit_1_with_line_and_field(project: Project, tmp_path: Path) -> None:
    ok = invoke(project, "validate")
    assert ok.exit_code == 0 and "site: valid, 2 tasks" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  - id: a\n    title: A\n    ready: true\n    allowed_paths: [/etc/passwd]\n")
    result = invoke(project, "validate", "--backlog", str(bad))
    assert result.exit_code == 1
    assert f"{bad}:5" in result.output and "allowed_paths" in result.output


def test_missing_config_is_one_clear_line_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "nope.yaml"), "tasks"])
    assert result.exit_code == 2 and "nope.yaml" in result.output and "Traceback" not in result.output


def test_init_scaffolds_a_valid_backlog_and_never_overwrites(project: Project, tmp_path: Path) -> None:
    repo = tmp_path / "newrepo"
    assert invoke(project, "init", str(repo)).exit_code == 0
    assert invoke(project, "validate", "--backlog", str(repo / ".leviathan/backlog.yaml")).exit_code == 0
    assert invoke(project, "init", str(repo)).exit_code != 0


def test_tasks_shows_reasons_and_json(project: Project) -> None:
    result = invoke(project, "tasks")
    assert "ready" in result.output and "waits for dependency 'a'" in result.output
    as_json = invoke(project, "tasks", "--json")
    assert '"reason": "dependency"' in as_json.output


def test_prs_list_show_merge_close_and_events(project: Project) -> None:
    assert run_worker(project, "site", "a", "attempt-1").returncode == 0
    listed = invoke(project, "prs", "list", "--state", "open")
    assert "#1" in listed.output and "agent/a-attempt-1" in listed.output
    assert "leviathan-task: site/a" in invoke(project, "prs", "show", "1").output
    merged = invoke(project, "prs", "merge", "1")
    assert merged.exit_code == 0 and "merged #1 into main" in merged.output
    assert invoke(project, "prs", "close", "1").exit_code == 2  # not open any more: clear error
    tail = invoke(project, "events", "tail", "--type", "task.completed")
    assert "task.completed" in tail.output
    verify = invoke(project, "events", "verify", "--json")
    assert '"ok": true' in verify.output
    # b's dependency is now completed on main: it is ready.
    assert "waits for dependency" not in invoke(project, "tasks").output


def test_prs_show_and_merge_as_json(project: Project) -> None:
    assert run_worker(project, "site", "a", "attempt-1").returncode == 0
    shown = json.loads(invoke(project, "prs", "show", "1", "--json").stdout)
    assert (shown["number"], shown["state"], shown["head"]) == (1, "open", "agent/a-attempt-1")
    merged = json.loads(invoke(project, "prs", "merge", "1", "--json").stdout)
    assert merged["state"] == "merged" and len(merged["merge_commit_sha"]) == 40


def test_prs_close_fails_the_attempt_with_its_consequences(project: Project) -> None:
    [attempt] = json.loads(invoke(project, "run", "--once", "--json").stdout)["attempts"]
    assert invoke(project, "prs", "close", "1").exit_code == 0
    events = list(project.events().read())
    closed = next(e for e in events if e.event_type == "pr.closed")
    assert closed.payload["task"] == "site/a" and closed.payload["attempt_id"] == attempt["attempt_id"]
    # Closed without merge counts as a failed attempt: a retry after the backoff, as for any failure.
    [retry] = [e for e in events if e.event_type == "retry.scheduled"]
    assert (retry.payload["task_id"], retry.payload["retry_number"]) == ("a", 2)
    readiness = json.loads(invoke(project, "tasks", "--json").stdout)["site"]["tasks"]
    [a] = [t for t in readiness if t["task"] == "a"]
    assert (a["reason"], a["next_attempt"]) == ("backoff", 2)


def test_target_pause_and_resume_from_the_cli_with_the_operators_identity(project: Project) -> None:
    paused = invoke(project, "target", "pause", "site", "--reason", "release freeze", "--operator", "ada")
    assert paused.exit_code == 0 and "operator:ada" in paused.output
    [event] = [e for e in project.events().read() if e.event_type == "target.paused"]
    assert (event.event.actor_id, event.payload["reason"]) == ("operator:ada", "release freeze")
    readiness = json.loads(invoke(project, "tasks", "--json").stdout)["site"]["tasks"]
    assert [t["reason"] for t in readiness if t["task"] == "a"] == ["paused"]
    resumed = json.loads(invoke(project, "target", "resume", "site", "--json").stdout)
    assert resumed["event_type"] == "target.resumed" and resumed["seq"] == event.seq + 1
    assert "paused" not in invoke(project, "tasks").output
    assert invoke(project, "target", "pause", "nope").exit_code == 2


def test_run_once_json_reports_the_cycles_attempts_on_stdout_progress_on_stderr(project: Project) -> None:
    result = invoke(project, "run", "--once", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stdout is nothing but the JSON line
    [attempt] = report["attempts"]
    assert (attempt["task_id"], attempt["status"], attempt["number"]) == ("a", "succeeded", 1)
    assert attempt["pr_url"] and attempt["branch_name"].startswith("agent/a-")
    assert "cycle at" in result.stderr
    # Next cycle: a's PR is open and b waits for a, so nothing runs and the report says why.
    again = json.loads(invoke(project, "run", "--once", "--json").stdout)
    assert again["attempts"] == [] and again["skipped"]


def test_a_removed_final_newline_is_reported_by_verify_and_kept(project: Project) -> None:
    # The repro: removing only the final newline of an acknowledged attempt.succeeded made
    # `events verify` cut the event and report success.
    assert run_worker(project, "site", "a", "attempt-1").returncode == 0
    log = project.home.events_path
    last = log.read_bytes().splitlines()[-1]
    assert b"attempt.succeeded" in last or b"pr.created" in last
    log.write_bytes(log.read_bytes()[:-1])
    damaged = log.read_bytes()
    result = invoke(project, "events", "verify")
    assert result.exit_code == 1 and "torn" in result.output and "verified" not in result.output
    assert "complete and chained" in result.output and "bytes " in result.output
    tail = invoke(project, "events", "tail", "-n", "1")
    assert last.split(b'"event_type":"')[1].split(b'"')[0].decode() in tail.stdout
    assert "torn tail" in tail.stderr
    assert log.read_bytes() == damaged


def test_read_commands_never_create_a_log(tmp_path: Path) -> None:
    home = tmp_path / "home"
    args = ["--config", str(tmp_path / "none.yaml"), "--home", str(home)]
    for command in (["events", "verify"], ["events", "tail"]):
        result = CliRunner().invoke(cli, [*args, *command])
        assert result.exit_code == 2 and f"no event log at {home}" in result.stderr, result.output
    assert not (home / "events.ndjson").exists() and not list(home.rglob("*.ndjson*"))


def test_events_verify_without_home_on_a_fresh_machine_says_there_is_no_log(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "LEVIATHAN_HOME": None, "LEVIATHAN_CONFIG": None}
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "none.yaml"), "events", "verify"], env=env)
    default = tmp_path / ".leviathan"
    assert result.exit_code == 2 and f"no event log at {default}" in result.stderr, result.output
    assert "chain verified" not in result.output and not default.exists()


def test_events_checkpoint_then_verify_against_it_and_detect_truncation(project: Project) -> None:
    assert run_worker(project, "site", "a", "attempt-1").returncode == 0
    assert invoke(project, "events", "checkpoint").exit_code == 0
    note = project.home.root / "checkpoints" / "latest.note"
    assert invoke(project, "events", "verify", "--checkpoint", str(note)).exit_code == 0
    # Drop the last event: the chain alone still verifies, the checkpoint does not.
    log = project.home.events_path
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-1]))
    result = invoke(project, "events", "verify", "--checkpoint", str(note))
    assert result.exit_code == 1 and "truncated" in result.output


def test_events_tail_shows_task_attempt_pr_and_the_event_id_prove_takes(project: Project) -> None:
    assert run_worker(project, "site", "a", "attempt-1").returncode == 0
    assert invoke(project, "prs", "merge", "1").exit_code == 0
    result = invoke(project, "events", "tail", "--event-id")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["SEQ", "TIME", "TYPE", "TARGET", "TASK", "ATTEMPT", "PR", "EVENT_ID", "DETAIL"]
    seqs = [int(row.split()[0]) for row in rows]
    assert seqs == sorted(seqs) and len(seqs) == len(list(project.events().read()))
    by_type = {row.split()[2]: row.split() for row in rows}
    # pr.merged names only its PR: the task and attempt come from the events before it.
    assert by_type["pr.merged"][3:7] == ["site", "a", "attempt-1", "#1"]
    assert by_type["attempt.started"][3:6] == ["site", "a", "attempt-1"]
    merged = next(e for e in project.events().read() if e.event_type == "pr.merged")
    assert by_type["pr.merged"][7] == merged.event.event_id
    assert invoke(project, "events", "checkpoint").exit_code == 0
    proved = invoke(project, "events", "prove", "--event", by_type["pr.merged"][7])
    assert proved.exit_code == 0, proved.output

    as_json = [json.loads(line) for line in invoke(project, "events", "tail", "--json").stdout.splitlines()]
    assert [e["seq"] for e in as_json] == seqs
    [merged_json] = [e for e in as_json if e["event_type"] == "pr.merged"]
    assert merged_json["event_id"] == merged.event.event_id
    assert merged_json["subject"] == {
        "target_id": "site",
        "task_id": "a",
        "attempt_id": "attempt-1",
        "pr_number": 1,
    }
    only = invoke(project, "events", "tail", "--task", "a", "--type", "pr.created").stdout.splitlines()
    assert len(only) == 2 and "#1" in only[1]


def test_events_tail_names_the_target_and_task_of_a_dagster_run(project: Project) -> None:
    assert invoke(project, "run", "--once").exit_code == 0
    rows = invoke(project, "events", "tail", "--type", "run.succeeded", "--task", "a").stdout.splitlines()[1:]
    assert rows and all(row.split()[3:5] == ["site", "a"] for row in rows), rows


def test_an_escalated_task_is_cleared_from_the_cli_and_runs_again(tmp_path: Path) -> None:
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"))}
    failing = {"test_command": ["python3", "-c", "import sys; sys.exit(1)"]}
    policy = {"max_attempts_per_task": 3, "escalation_after": 1, "backoff_seconds": 0}
    project = make_project(tmp_path, {"site": {"files": files, "policy": policy, **failing}})
    assert invoke(project, "run", "--once").exit_code == 1
    readiness = json.loads(invoke(project, "tasks", "--json").stdout)["site"]["tasks"]
    assert [t["reason"] for t in readiness] == ["escalated"]
    assert invoke(project, "run", "--once").exit_code == 0  # nothing runs: it needs a human
    # The fix (here: the test command) lands; the escalation still holds until an operator clears it.
    make_project(tmp_path, {"site": {"policy": policy}})
    assert [t["reason"] for t in json.loads(invoke(project, "tasks", "--json").stdout)["site"]["tasks"]] == [
        "escalated"
    ]
    cleared = invoke(
        project, "task", "clear-escalation", "site", "a", "--reason", "fixed", "--operator", "ada"
    )
    assert cleared.exit_code == 0, cleared.output
    assert "task.escalation_cleared for site/a (escalated) by operator:ada" in cleared.output
    [event] = [e for e in project.events().read() if e.event_type == "task.escalation_cleared"]
    assert (event.event.actor_id, event.payload["reason"], event.payload["attempts_before"]) == (
        "operator:ada",
        "fixed",
        1,
    )
    [a] = json.loads(invoke(project, "tasks", "--json").stdout)["site"]["tasks"]
    assert (a["ready"], a["next_attempt"]) == (True, 2)
    [attempt] = json.loads(invoke(project, "run", "--once", "--json").stdout)["attempts"]
    assert (attempt["number"], attempt["status"]) == (2, "succeeded")
    # Nothing to clear now, an unknown target: exit 2 with the reason, nothing recorded.
    again = invoke(project, "task", "clear-escalation", "site", "a")
    assert again.exit_code == 2 and "nothing to clear" in again.output
    assert invoke(project, "task", "clear-escalation", "nope", "a").exit_code == 2
    assert sum(e.event_type == "task.escalation_cleared" for e in project.events().read()) == 1
