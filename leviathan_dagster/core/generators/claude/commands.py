"""The target's test command for the ``run_tests`` tool, and keeping the checkout to the model's own change.

Both the test command and the model's bash commands run in the sandbox (``core.sandbox``), which keeps the
checkout read-only but for the scope. What they still leave behind is undone here: whatever a command
wrote that the model did not (caches, reports), and any change outside the scope or to the backlog, so
the diff the worker checks is the model's change and nothing else.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from leviathan_dagster.core.errors import GeneratorError
from leviathan_dagster.core.generators.claude.tools import ScopedWorkspace
from leviathan_dagster.core.models import BACKLOG_PATH

TEST_OUTPUT_TAIL = 8_000
TEST_OUTPUT_CAP = 1_000_000


@dataclass(frozen=True)
class TestRun:
    __test__ = False  # not a pytest class
    exit_code: int | None  # None: timed out
    output: str

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


def run_tests(
    workspace: ScopedWorkspace, command: tuple[str, ...], env: Mapping[str, str], timeout: float
) -> TestRun:
    """The test command in the sandbox, as the worker's final run does (never unsandboxed: GeneratorError
    when no sandbox can be created); what it wrote is discarded afterwards."""
    from leviathan_dagster.core.sandbox import SandboxUnavailable, run_sandboxed

    if not command:
        return TestRun(0, "no test command is configured for this target")
    path = env.get("PATH")
    try:
        result = run_sandboxed(
            list(command),
            workspace=workspace.root,
            writable=workspace.writable,
            timeout=timeout,
            output_cap=TEST_OUTPUT_CAP,
            env={"PATH": path} if path else {},
        )
    except SandboxUnavailable as exc:
        raise GeneratorError(f"no sandbox for the test command: {exc}") from None
    finally:
        discard_leftovers(workspace)
    if result.timed_out:
        return TestRun(None, f"the test command did not finish within {timeout:.0f}s")
    return TestRun(result.returncode, result.output[-TEST_OUTPUT_TAIL:])


def discard_leftovers(workspace: ScopedWorkspace) -> None:
    """Undo every change but the model's own edits (``workspace.written``)."""
    for code, path in _changes(workspace):
        if path not in workspace.written:
            _revert(workspace, code, path)


def keep_scope(workspace: ScopedWorkspace) -> list[str]:
    """After a bash command: revert every change outside the scope (and to the backlog), note the ones
    inside as the model's; returns the reverted paths."""
    reverted = []
    for code, path in _changes(workspace):
        if path != BACKLOG_PATH and workspace.in_scope(path):
            workspace.written.add(path)
        else:
            _revert(workspace, code, path)
            reverted.append(path)
    return reverted


def _changes(workspace: ScopedWorkspace) -> list[tuple[str, str]]:
    status = subprocess.run(
        ["git", "status", "--porcelain=v1", "-z", "--untracked-files=all"],
        cwd=workspace.root,
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8", "surrogateescape")
    return [(entry[:2], entry[3:]) for entry in filter(None, status.split("\0")) if entry[3:]]


def _revert(workspace: ScopedWorkspace, code: str, path: str) -> None:
    if code == "??":
        (workspace.root / path).unlink(missing_ok=True)
    else:
        subprocess.run(["git", "checkout", "-q", "HEAD", "--", path], cwd=workspace.root, check=False)
