"""The pull request an attempt opens: title, body with checklist, touched paths and the hidden marker."""

from __future__ import annotations

from dataclasses import dataclass

from leviathan_dagster.core.attempts.markers import render_task_marker
from leviathan_dagster.core.attempts.path_policy import ChangedPath
from leviathan_dagster.core.models import Task

_STATUS_WORDS = {"A": "added", "M": "modified", "D": "deleted", "R": "renamed", "T": "type changed"}
# Token totals shown on the PR, in this order (labels as a reader expects them); counts only, never text.
_USAGE_ROWS = (
    ("input_tokens", "input tokens"),
    ("output_tokens", "output tokens"),
    ("cache_creation_input_tokens", "cache write tokens"),
    ("cache_read_input_tokens", "cache read tokens"),
    ("total_tokens", "total tokens"),
)
_SUMMARY_CHARS = 200


@dataclass(frozen=True)
class TestReport:
    """The outcome of the worker's final run of the test command, as the PR shows it."""

    __test__ = False  # not a pytest class

    status: str  # passed | failed (draft) | no test command configured
    command: tuple[str, ...] = ()
    exit_code: int | None = None
    summary_line: str | None = None  # the last non-empty line of tests.log (pytest's "N passed in ...")

    @property
    def failed(self) -> bool:
        return self.exit_code not in (None, 0)


def last_summary_line(output: str) -> str | None:
    """The test run's own summary (its last non-empty line), shortened and safe inside inline code."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return None
    line = lines[-1].replace("`", "'")
    return line if len(line) <= _SUMMARY_CHARS else line[: _SUMMARY_CHARS - 1] + "…"


def render_title(task: Task) -> str:
    return f"[leviathan] {task.title}"


def render_body(
    *,
    target_id: str,
    task: Task,
    attempt_id: str,
    attempt_number: int,
    changes: list[ChangedPath],
    generator: str,
    tests: TestReport,
    usage: dict | None = None,
) -> str:
    """``usage`` is the attempt's token totals (UsageRecorder.summary()), None when no model was called."""
    lines = [f"## Task `{task.id}`: {task.title}", ""]
    if tests.failed:
        lines += [
            "> **Tests are failing.** This is a draft: the target's policy `allow_draft_on_failing_tests` "
            "lets Leviathan open it for a human to finish. Do not merge it as is.",
            "",
        ]
    if task.description.strip():
        lines += [task.description.strip(), ""]
    if task.acceptance_criteria:
        lines += ["## Acceptance criteria", ""]
        lines += [f"- [ ] {criterion}" for criterion in task.acceptance_criteria]
        lines.append("")
    lines += ["## Touched paths", ""]
    for change in changes:
        word = _STATUS_WORDS.get(change.status, change.status)
        origin = f" (from `{change.old_path}`)" if change.old_path else ""
        lines.append(f"- `{change.path}` {word}{origin}")
    lines += [
        "",
        "## Attempt",
        "",
        f"- target: `{target_id}`",
        f"- attempt: {attempt_number} (`{attempt_id}`)",
        f"- generator: `{generator}`",
        *_test_lines(tests),
        *_usage_lines(usage),
        "",
        "_Opened by Leviathan. The backlog write-back for this task is part of this PR._",
        "",
        render_task_marker(target_id, task.id),
        "",
    ]
    return "\n".join(lines)


def _test_lines(tests: TestReport) -> list[str]:
    lines = [f"- tests: {tests.status}"]
    if tests.command:
        command = " ".join(tests.command).replace("`", "'")
        lines.append(f"  - command: `{command}` (exit {tests.exit_code})")
    if tests.summary_line:
        lines.append(f"  - summary: `{tests.summary_line}`")
    return lines


def _usage_lines(usage: dict | None) -> list[str]:
    if not usage:
        return []
    lines = [f"- model: `{usage.get('model')}`, {usage.get('calls', 0)} call(s)"]
    lines += [f"  - {label}: {usage.get(key, 0)}" for key, label in _USAGE_ROWS]
    if usage.get("usd") is not None:
        lines.append(f"  - estimated cost: ${usage['usd']:.4f}")
    return lines
