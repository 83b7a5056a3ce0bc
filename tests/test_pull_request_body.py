"""The PR body: test outcome with the run's summary line, token totals when a model was used, the failing
label on a draft; never a prompt or a response (only counts reach it)."""

from __future__ import annotations

from leviathan_dagster.core.attempts.markers import render_task_marker
from leviathan_dagster.core.attempts.path_policy import ChangedPath
from leviathan_dagster.core.models import Task
from worker.pull_request import TestReport, last_summary_line, render_body

USAGE = {
    "calls": 3,
    "input_tokens": 1200,
    "output_tokens": 340,
    "cache_creation_input_tokens": 50,
    "cache_read_input_tokens": 800,
    "total_tokens": 2390,
    "model": "claude-sonnet-4-6",
    "template_version": "claude-rewrite/abc",
    "prompt_sha256": "f" * 64,
    "usd": 0.0123,
}


def body(tests: TestReport, usage: dict | None = None) -> str:
    task = Task(
        id="slug", title="Fix slugify", ready=True, allowed_paths=("lib/",), description="Make it hyphenate."
    )
    return render_body(
        target_id="site",
        task=task,
        attempt_id="attempt-1",
        attempt_number=1,
        changes=[ChangedPath(status="M", path="lib/textutil.py")],
        generator="claude",
        tests=tests,
        usage=usage,
    )


def test_passing_tests_show_command_exit_and_summary_and_the_token_totals() -> None:
    report = TestReport("passed", ("pytest", "-q"), 0, last_summary_line("..\n2 passed in 0.01s\n\n"))
    text = body(report, USAGE)
    assert "- tests: passed\n  - command: `pytest -q` (exit 0)\n  - summary: `2 passed in 0.01s`" in text
    assert "- model: `claude-sonnet-4-6`, 3 call(s)" in text
    for line in (
        "input tokens: 1200",
        "output tokens: 340",
        "cache write tokens: 50",
        "cache read tokens: 800",
        "total tokens: 2390",
        "estimated cost: $0.0123",
    ):
        assert f"  - {line}\n" in text, line
    assert "Tests are failing" not in text and render_task_marker("site", "slug") in text
    # Hashes and template versions identify prompts; the PR is for humans and shows counts only.
    assert "f" * 64 not in text and "claude-rewrite" not in text


def test_no_model_no_usage_and_no_test_command_no_command_line() -> None:
    text = body(TestReport("no test command configured"))
    assert "- tests: no test command configured\n" in text
    assert "model:" not in text and "command:" not in text and "summary:" not in text


def test_a_failing_draft_is_labelled_at_the_top() -> None:
    text = body(TestReport("failed (draft)", ("pytest",), 1, "1 failed, 1 passed in 0.02s"))
    assert text.index("**Tests are failing.**") < text.index("## Touched paths")
    assert "- tests: failed (draft)\n  - command: `pytest` (exit 1)\n  - summary: `1 failed" in text


def test_summary_line_is_the_last_non_empty_line_kept_short_and_code_safe() -> None:
    assert last_summary_line("") is None and last_summary_line("\n  \n") is None
    assert last_summary_line("a\nuse `x`\n") == "use 'x'"
    long = last_summary_line("x" * 500)
    assert long is not None and len(long) == 200 and long.endswith("…")
