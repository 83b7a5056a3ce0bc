"""Backlog parsing (every problem located by file, line, task and field) and the in-place write-back."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from leviathan_dagster.core.backlog.document import load_backlog, parse_backlog, write_back_completion
from leviathan_dagster.core.errors import BacklogError, ConfigError

SRC = ".leviathan/backlog.yaml"

GOOD = """\
# Backlog of the docs site.
tasks:
  - id: task-1
    title: "Fix broken links in README"
    description: "Update all broken documentation links"
    scope: docs
    ready: true
    status: pending
    allowed_paths:
      - ./docs//README.md
      - docs/architecture/
    acceptance_criteria:
      - All links return 200 status
    dependencies: []
  - id: task-2
    title: Write the guide
    ready: false
    priority: 5
    generator: docs
    allowed_paths: [docs/guide.md]
    dependencies: [task-1]
    attempt_id: att-1
    branch_name: agent/task-2/att-1
    completed_at: "2024-05-01T10:00:00Z"
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(BacklogError) as info:
        parse_backlog(text)
    return info.value.problems


def one_task(**fields: str) -> str:
    """A backlog with one task, ``fields`` overriding (or, with value None, removing) the defaults; its
    ``generator: docs`` comes last, so the other fields keep their lines."""
    base = {"id": "t1", "title": "T", "ready": "true", "allowed_paths": "[docs/]"}
    base.update(fields)
    base.setdefault("generator", "docs")
    lines = [f"    {k}: {v}" for k, v in base.items() if v is not None]
    return "tasks:\n" + "\n".join(lines).replace("    ", "  - ", 1) + "\n"


def test_parse_good_backlog() -> None:
    backlog = parse_backlog(GOOD)
    first, second = backlog.tasks
    assert backlog.source == SRC
    assert backlog.warnings == ()
    assert first.id == "task-1"
    assert first.line == 3
    assert first.allowed_paths == ("docs/README.md", "docs/architecture/")
    assert first.acceptance_criteria == ("All links return 200 status",)
    assert (first.priority, first.status, first.generator, first.scope) == (3, "pending", None, "docs")
    assert second.line == 15
    assert (second.priority, second.ready, second.generator) == (5, False, "docs")
    assert second.description == ""
    assert second.dependencies == ("task-1",)
    # Write-back keys are kept without a warning.
    assert dict(second.extra) == {
        "attempt_id": "att-1",
        "branch_name": "agent/task-2/att-1",
        "completed_at": "2024-05-01T10:00:00Z",
    }
    assert backlog.get("task-2") is second
    assert backlog.get("nope") is None


def test_load_backlog_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "backlog.yaml"
    path.write_text(one_task(priority="high"))
    with pytest.raises(BacklogError, match=rf"^{re.escape(str(path))}:6: task 't1': field 'priority'"):
        load_backlog(path)
    path.write_text(GOOD)
    assert load_backlog(path).source == str(path)
    with pytest.raises(BacklogError, match="no backlog file"):
        load_backlog(tmp_path / "missing.yaml")


def test_priority_message_matches_the_documented_form() -> None:
    text = one_task(priority="high")
    assert problems_of(text) == [
        f"{SRC}:6: task 't1': field 'priority' must be an integer from 1 (lowest) to 5 (highest), "
        "got 'high'. Fix: write e.g. 'priority: 4'."
    ]


@pytest.mark.parametrize(
    ("fields", "line", "expected"),
    [
        ({"priority": "0"}, 6, "field 'priority' must be an integer from 1 (lowest) to 5 (highest), got 0"),
        ({"priority": "6"}, 6, "field 'priority' must be an integer from 1"),
        (
            {"priority": "true"},
            6,
            "field 'priority' must be an integer from 1 (lowest) to 5 (highest), got true",
        ),
        ({"id": "'bad id'"}, 2, "field 'id' must match"),
        ({"id": "'a..b'"}, 2, "field 'id' is not valid in a git branch name"),
        ({"id": '"t1\\n"'}, 2, "field 'id' must match [A-Za-z0-9][A-Za-z0-9._-]* in full"),
        ({"id": "x" * 101}, 2, "field 'id' is 101 characters long, more than 100"),
        ({"id": "t1.lock"}, 2, "field 'id' is not valid in a git branch name"),
        ({"id": "t1."}, 2, "field 'id' is not valid in a git branch name"),
        ({"id": "'-lead'"}, 2, "field 'id' must match"),
        ({"id": "42"}, 2, "field 'id' must be a string matching"),
        ({"title": "''"}, 3, "field 'title' must be a non-empty string"),
        ({"ready": "'true'"}, 4, "field 'ready' must be true or false, got 'true'"),
        (
            {"status": "done"},
            6,
            "field 'status' must be one of pending, in_progress, completed, blocked, cancelled",
        ),
        ({"allowed_paths": "[]"}, 5, "field 'allowed_paths' must list at least one path"),
        ({"allowed_paths": "docs/"}, 5, "field 'allowed_paths' must be a list of strings"),
        (
            {"allowed_paths": "[/etc/passwd]"},
            5,
            "field 'allowed_paths' has a bad path: '/etc/passwd': absolute",
        ),
        ({"allowed_paths": "[docs/../src]"}, 5, "field 'allowed_paths' has a bad path: 'docs/../src': '..'"),
        (
            {"allowed_paths": "['docs\\a.md']"},
            5,
            "field 'allowed_paths' has a bad path: 'docs\\\\a.md': backslash",
        ),
        ({"acceptance_criteria": "done"}, 6, "field 'acceptance_criteria' must be a list of strings"),
        ({"dependencies": "[1]"}, 6, "field 'dependencies' items must be strings, got 1"),
        ({"description": "[a]"}, 6, "field 'description' must be a non-empty string, got a list"),
    ],
)
def test_field_errors_name_line_task_and_field(fields: dict, line: int, expected: str) -> None:
    problems = problems_of(one_task(**fields))
    assert len(problems) == 1
    location, message = problems[0].split(": ", 1)
    assert location == f"{SRC}:{line}"
    assert message.startswith("task #1: " if fields.get("id") == "42" else "task '")
    assert f": {expected}" in message
    assert ". Fix: " in problems[0]


@pytest.mark.parametrize("field", ["id", "title", "ready", "allowed_paths"])
def test_missing_required_field(field: str) -> None:
    problems = problems_of(one_task(**{field: None}))
    assert problems == [
        f"{SRC}:2: task {'#1' if field == 'id' else repr('t1')}: required field {field!r} is missing. "
        f"Fix: add '{field}:' to this task."
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = textwrap.dedent(
        """\
        tasks:
          - id: a
            title: A
            ready: maybe
            allowed_paths: [/abs, ../up, docs/]
            priority: 9
          - id: b
            ready: true
            allowed_paths: [docs/]
            dependencies: [nope]
        """
    )
    problems = problems_of(text)
    assert [p.split(": ", 1)[0] for p in problems] == [f"{SRC}:{n}" for n in (4, 5, 5, 6, 7, 10)]
    assert "field 'ready'" in problems[0]
    assert "'/abs'" in problems[1] and "'../up'" in problems[2]
    assert "required field 'title'" in problems[4]
    assert "unknown task 'nope'" in problems[5]


def test_duplicate_ids_name_both_lines() -> None:
    text = "tasks:\n" + one_task(id="same")[7:] + one_task(id="same")[7:]
    assert problems_of(text) == [
        f"{SRC}:7: task 'same': id 'same' is used twice (lines 2 and 7). Fix: give every task a unique id."
    ]


def test_duplicate_field_in_a_task() -> None:
    problems = problems_of(one_task(title="A") + "    title: B\n")
    assert problems == [
        f"{SRC}:7: task 't1': field 'title' is given twice (lines 3 and 7). Fix: keep only one of them."
    ]


def test_unknown_and_self_dependencies() -> None:
    problems = problems_of(one_task(dependencies="[t1, ghost]"))
    assert problems == [
        f"{SRC}:6: task 't1': depends on itself. Fix: remove 't1' from its dependencies.",
        f"{SRC}:6: task 't1': field 'dependencies' names unknown task 'ghost'. "
        "Fix: use an id of this backlog or remove it.",
    ]


def test_dependency_cycle_is_printed() -> None:
    text = textwrap.dedent(
        """\
        tasks:
          - {id: x, title: X, ready: false, status: completed, allowed_paths: [docs/]}
          - {id: b, title: B, ready: false, status: completed, allowed_paths: [docs/], dependencies: [c]}
          - {id: a, title: A, ready: false, status: completed, allowed_paths: [docs/], dependencies: [b]}
          - {id: c, title: C, ready: false, status: completed, allowed_paths: [docs/], dependencies: [a, x]}
        """
    )
    assert problems_of(text) == [
        f"{SRC}:3: task 'b': dependency cycle b -> c -> a -> b. Fix: remove one of these dependencies."
    ]


def test_dependency_on_an_invalid_task_is_not_unknown() -> None:
    text = one_task(dependencies="[t2]") + one_task(id="t2", priority="high")[7:]
    problems = problems_of(text)
    assert len(problems) == 1 and "field 'priority'" in problems[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", f"{SRC}:1: expected a mapping with a 'tasks' list, got an empty file"),
        ("- a\n- b\n", f"{SRC}:1: expected a mapping with a 'tasks' list, got a list"),
        ("todo: []\n", f"{SRC}:1: expected a 'tasks' list, got no 'tasks' key"),
        ("tasks: 3\n", f"{SRC}:1: expected a 'tasks' list, got 'tasks' holding 3"),
        ("tasks:\n  - just a string\n", f"{SRC}:2: task #1 must be a mapping, got 'just a string'"),
    ],
)
def test_bad_file_shapes(text: str, expected: str) -> None:
    [problem] = problems_of(text)
    assert problem.startswith(expected)


def test_yaml_syntax_error_names_line_and_column() -> None:
    [problem] = problems_of("tasks:\n  - id: a\n    title: [unclosed\n    ready: true\n")
    assert problem.startswith(f"{SRC}:4:10: invalid YAML:")
    [problem] = problems_of("tasks:\n  - id: a\n   title: b\n")
    assert problem.startswith(f"{SRC}:3:")


def test_unknown_fields_warn_and_are_kept() -> None:
    backlog = parse_backlog("owner: docs-team\n" + one_task(prio="4", labels="[x, y]"))
    assert backlog.warnings == (
        f"{SRC}:1: unknown top-level key 'owner' is ignored",
        f"{SRC}:7: task 't1': unknown field 'prio' is kept but not used (did you mean 'priority'?)",
        f"{SRC}:8: task 't1': unknown field 'labels' is kept but not used",
    )
    assert dict(backlog.tasks[0].extra) == {"prio": 4, "labels": ["x", "y"]}
    assert backlog.tasks[0].priority == 3


def test_a_typo_of_a_known_field_is_an_error() -> None:
    # 'dependecies:' kept as an unknown field would run the task before its dependencies.
    assert problems_of(one_task(dependecies="[t0]", priorty="4")) == [
        f"{SRC}:6: task 't1': unknown field 'dependecies' (did you mean 'dependencies'?). "
        "Fix: rename it to 'dependencies'.",
        f"{SRC}:7: task 't1': unknown field 'priorty' (did you mean 'priority'?). "
        "Fix: rename it to 'priority'.",
    ]


def test_old_executor_key_is_read_with_a_warning() -> None:
    backlog = parse_backlog(one_task(generator=None, executor="tests", acceptance_criteria="['m.f() == 1']"))
    assert backlog.tasks[0].generator == "tests" == backlog.tasks[0].executor
    assert backlog.warnings == (
        f"{SRC}:6: task 't1': field 'executor' is now called 'generator'. Fix: rename it to 'generator:'.",
    )
    problems = problems_of(one_task(executor="docs"))
    assert problems == [
        f"{SRC}:6: task 't1': both 'generator' and its old name 'executor' are given. Fix: keep 'generator'."
    ]


# --- write-back ---------------------------------------------------------------------------------------

BACKLOG = """\
# Work for the docs site.
tasks:
  # First task: links.
  - id: links
    title: 'Fix links'   # keep quoted
    ready: true
    status: pending
    allowed_paths:
      - docs/
    generator: docs
  - id: guide
    title: "Write guide"
    ready: true
    allowed_paths: [docs/guide.md]
    dependencies: [links]
    generator: docs
"""
STAMP = {"attempt_id": "att-7", "branch_name": "agent/links/att-7", "completed_at": "2024-05-01T10:00:00Z"}


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """(removed lines, added lines) of a line diff."""
    import difflib

    diff = list(difflib.ndiff(before.splitlines(keepends=True), after.splitlines(keepends=True)))
    return [d[2:] for d in diff if d.startswith("- ")], [d[2:] for d in diff if d.startswith("+ ")]


def test_write_back_is_a_minimal_edit() -> None:
    after = write_back_completion(BACKLOG, "links", **STAMP)
    removed, added = changed_lines(BACKLOG, after)
    assert removed == ["    ready: true\n", "    status: pending\n"]
    assert added == [
        "    ready: false\n",
        "    status: completed\n",
        "    attempt_id: att-7\n",
        "    branch_name: agent/links/att-7\n",
        '    completed_at: "2024-05-01T10:00:00Z"\n',
    ]
    # Every other line, comments and the other task included, is byte-identical and in place.
    assert after.startswith(BACKLOG[: BACKLOG.index("    ready: true")])
    assert after.endswith(BACKLOG[BACKLOG.index("    allowed_paths:\n      - docs/") :])
    task = parse_backlog(after).get("links")
    assert (task.status, task.ready) == ("completed", False)
    assert dict(task.extra) == STAMP
    guide = parse_backlog(BACKLOG).get("guide")
    assert parse_backlog(after).get("guide") == dataclasses.replace(guide, line=guide.line + 3)


def test_write_back_inserts_a_missing_status() -> None:
    after = write_back_completion(BACKLOG, "guide", **STAMP)
    removed, added = changed_lines(BACKLOG, after)
    assert removed == ["    ready: true\n"]
    assert added[0] == "    ready: false\n"
    assert added[1:3] == ["    status: completed\n", "    attempt_id: att-7\n"]
    assert after.index("status: completed") < after.index("allowed_paths: [docs/guide.md]")
    task = parse_backlog(after).get("guide")
    assert (task.status, task.ready, task.extra["completed_at"]) == (
        "completed",
        False,
        STAMP["completed_at"],
    )


def test_write_back_replaces_earlier_write_back_keys() -> None:
    once = write_back_completion(BACKLOG, "links", **STAMP)
    twice = write_back_completion(once, "links", attempt_id="att-8", branch_name="b", completed_at="later")
    removed, added = changed_lines(once, twice)
    assert removed == [
        "    attempt_id: att-7\n",
        "    branch_name: agent/links/att-7\n",
        '    completed_at: "2024-05-01T10:00:00Z"\n',
    ]
    assert added == ["    attempt_id: att-8\n", "    branch_name: b\n", "    completed_at: later\n"]


def test_write_back_quotes_values_that_would_change_type() -> None:
    after = write_back_completion(
        BACKLOG, "guide", attempt_id="1e5", branch_name="true", completed_at='a "b": c'
    )
    extra = parse_backlog(after).get("guide").extra
    assert dict(extra) == {"attempt_id": "1e5", "branch_name": "true", "completed_at": 'a "b": c'}


def test_write_back_fills_an_empty_value_and_keeps_crlf() -> None:
    text = "tasks:\r\n  - id: a\r\n    title: A\r\n    ready:\r\n    allowed_paths: [docs/]\r\n"
    after = write_back_completion(text, "a", **STAMP)
    assert "\n" not in after.replace("\r\n", "")
    assert after.startswith(
        "tasks:\r\n  - id: a\r\n    title: A\r\n    ready: false\r\n    status: completed\r\n"
    )
    assert parse_backlog(after).get("a").status == "completed"


def test_write_back_last_line_without_newline() -> None:
    after = write_back_completion(
        "tasks:\n  - id: a\n    title: A\n    allowed_paths: [x/]\n    ready: true", "a", **STAMP
    )
    assert after.startswith("tasks:\n  - id: a\n    title: A\n    allowed_paths: [x/]\n    ready: false\n")
    assert parse_backlog(after).get("a").extra["attempt_id"] == "att-7"


def test_write_back_refuses_flow_style_tasks() -> None:
    text = "tasks:\n  - {id: a, title: A, ready: true, allowed_paths: [docs/]}\n"
    with pytest.raises(ConfigError, match="task 'a' is written in flow style.*block style"):
        write_back_completion(text, "a", **STAMP)


def test_write_back_refuses_multi_line_values() -> None:
    text = (
        "tasks:\n  - id: a\n    title: A\n    ready: true\n"
        + "    status: >-\n      pending\n    allowed_paths: [x]\n    generator: docs\n"
    )
    # Validation refuses it before any attempt is spent on it; write-back refuses it too.
    assert problems_of(text) == [
        f"{SRC}:5: task 'a': field 'status' is not a plain one-line value, so write-back cannot update it. "
        "Fix: write it as 'status: value' on one line."
    ]
    with pytest.raises(ConfigError, match=r":5: task 'a': field 'status' must be a plain one-line value"):
        write_back_completion(text, "a", **STAMP)


def test_write_back_unknown_task() -> None:
    with pytest.raises(ConfigError, match="task 'nope': it is not in the backlog"):
        write_back_completion(BACKLOG, "nope", **STAMP)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def test_write_backs_of_adjacent_tasks_merge_cleanly_in_git(tmp_path: Path) -> None:
    # Worst case for git: task one ends with 'ready' and task two starts with it, so the two edits are
    # separated by a single unchanged line ('- id: two'); git merges them only if they do not touch.
    text = textwrap.dedent(
        """\
        tasks:
          - id: one
            title: One
            allowed_paths: [docs/one.md]
            ready: true
          - id: two
            ready: true
            title: Two
            allowed_paths: [docs/two.md]
          - id: three
            title: Three
            status: pending
            ready: true
            allowed_paths: [docs/three.md]
        """
    )
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "config", "user.name", "Test")
    git(repo, "config", "user.email", "test@example.com")
    backlog = repo / "backlog.yaml"
    backlog.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "backlog")
    for branch, task_id in [("agent/one", "one"), ("agent/two", "two"), ("agent/three", "three")]:
        git(repo, "switch", "--quiet", "-c", branch, "main")
        backlog.write_text(
            write_back_completion(
                text,
                task_id,
                attempt_id=f"att-{task_id}",
                branch_name=branch,
                completed_at="2024-05-01T10:00:00Z",
            )
        )
        git(repo, "commit", "--quiet", "-am", f"complete {task_id}")
    git(repo, "switch", "--quiet", "main")
    for branch in ("agent/one", "agent/two", "agent/three"):
        git(repo, "merge", "--quiet", "--no-edit", branch)  # raises CalledProcessError on conflict
    merged = parse_backlog(backlog.read_text())
    assert [(t.status, t.ready, t.extra["branch_name"]) for t in merged.tasks] == [
        ("completed", False, "agent/one"),
        ("completed", False, "agent/two"),
        ("completed", False, "agent/three"),
    ]
