"""The Claude generator's tools and the harness that checks every call against the task's scope.

Scope is the intersection of the task's ``allowed_paths`` and the target's ``allowed_path_prefixes``,
matched with the same boundary-safe rules as the diff check (``core.paths``), so the model is stopped
on the call that would leave it, not later. Paths are also resolved on disk: a symlink inside an
allowed directory cannot be used to read or write outside it. There is no shell; ``run_tests`` runs the
target's configured command with the credential-free environment the worker built.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from leviathan_dagster.core.errors import PolicyViolation
from leviathan_dagster.core.models import BACKLOG_PATH
from leviathan_dagster.core.paths import normalize_repo_path, path_matches
from leviathan_dagster.core.sandbox import run_sandboxed

MAX_READ_CHARS = 100_000
TEST_OUTPUT_TAIL = 8_000

_PATH = {"type": "string", "description": "repository-relative path, e.g. src/app.py"}
TOOLS = [
    {
        "name": "list_files",
        "description": "List files inside the allowed paths (optionally under one directory).",
        "input_schema": {"type": "object", "properties": {"path": _PATH}},
    },
    {
        "name": "read_file",
        "description": "Read a UTF-8 text file inside the allowed paths.",
        "input_schema": {"type": "object", "properties": {"path": _PATH}, "required": ["path"]},
    },
    {
        "name": "write_file",
        "description": "Create or overwrite a file inside the allowed paths with the given content.",
        "input_schema": {
            "type": "object",
            "properties": {"path": _PATH, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    },
    {
        "name": "replace_in_file",
        "description": "Replace the one exact occurrence of old_text with new_text (error if 0 or >1).",
        "input_schema": {
            "type": "object",
            "properties": {"path": _PATH, "old_text": {"type": "string"}, "new_text": {"type": "string"}},
            "required": ["path", "old_text", "new_text"],
        },
    },
    {
        "name": "run_tests",
        "description": "Run the repository's test command and return its exit code and output.",
        "input_schema": {"type": "object", "properties": {}},
    },
]


class ToolError(Exception):
    """A bad tool call the model can correct: returned to it as an error result."""


@dataclass(frozen=True)
class TestRun:
    __test__ = False  # not a pytest class
    exit_code: int | None  # None: timed out
    output: str

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


class ScopedWorkspace:
    """File operations on the workspace, each checked against the scope before it touches the disk."""

    def __init__(self, root: Path, task_paths: tuple[str, ...], prefixes: tuple[str, ...]) -> None:
        self.root = root.resolve()
        self.task_paths, self.prefixes = task_paths, prefixes
        self.written: set[str] = set()

    def in_scope(self, path: str) -> bool:
        return any(path_matches(path, r) for r in self.task_paths) and any(
            path_matches(path, r) for r in self.prefixes
        )

    def check(self, path: object, *, writing: bool = False) -> tuple[str, Path]:
        """The normalized path and its location; PolicyViolation if it is outside the scope."""
        if not isinstance(path, str):
            raise ToolError("'path' must be a string")
        normalized = normalize_repo_path(path).rstrip("/")
        parts = normalized.split("/")
        if any(part.lower().rstrip(". ") in (".git", "git~1") for part in parts):
            raise PolicyViolation(f"{path!r} is inside a .git directory")
        if writing and normalized == BACKLOG_PATH:
            raise PolicyViolation(f"{path!r} is the backlog; the harness writes it back, never the model")
        if not self.in_scope(normalized):
            raise PolicyViolation(
                f"{path!r} is outside the task's allowed paths ({', '.join(self.task_paths)})"
            )
        full = self.root / normalized
        real = Path(os.path.realpath(full))
        if real != self.root and self.root not in real.parents:
            raise PolicyViolation(f"{path!r} resolves outside the workspace")
        relative = real.relative_to(self.root).as_posix()
        if relative != normalized and not self.in_scope(relative):
            raise PolicyViolation(f"{path!r} resolves to {relative!r}, outside the allowed paths")
        return normalized, full

    def list_files(self, path: object = None) -> str:
        if path:
            _, start = self.check(path)
            starts = [start]
        else:
            starts = [self.root / normalize_repo_path(rule).rstrip("/") for rule in self.task_paths]
        found: set[str] = set()
        for start in starts:
            candidates = [start] if start.is_file() else sorted(p for p in start.rglob("*") if p.is_file())
            for file in candidates:
                relative = file.relative_to(self.root).as_posix()
                try:
                    found.add(self.check(relative)[0])  # skips symlinks that lead out of the scope
                except PolicyViolation:
                    continue
        return "\n".join(sorted(found)) or "(no files yet; allowed: " + ", ".join(self.task_paths) + ")"

    def read_file(self, path: object) -> str:
        _, full = self.check(path)
        if not full.is_file():
            raise ToolError(f"{path!r} does not exist or is not a file")
        text = full.read_text(encoding="utf-8", errors="replace")
        return text if len(text) <= MAX_READ_CHARS else text[:MAX_READ_CHARS] + "\n[... truncated]"

    def write_file(self, path: object, content: object) -> str:
        normalized, full = self.check(path, writing=True)
        if not isinstance(content, str):
            raise ToolError("'content' must be a string")
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(content, encoding="utf-8")
        self.written.add(normalized)
        return f"wrote {normalized} ({len(content.encode())} bytes)"

    def replace_in_file(self, path: object, old_text: object, new_text: object) -> str:
        normalized, full = self.check(path, writing=True)
        if not isinstance(old_text, str) or not isinstance(new_text, str) or not old_text:
            raise ToolError("'old_text' must be a non-empty string and 'new_text' a string")
        if not full.is_file():
            raise ToolError(f"{path!r} does not exist; use write_file to create it")
        text = full.read_text(encoding="utf-8")
        count = text.count(old_text)
        if count != 1:
            raise ToolError(f"old_text occurs {count} times in {normalized}; it must occur exactly once")
        full.write_text(text.replace(old_text, new_text), encoding="utf-8")
        self.written.add(normalized)
        return f"replaced 1 occurrence in {normalized}"

    def run_tests(self, command: tuple[str, ...], env: Mapping[str, str], timeout: float) -> TestRun:
        if not command:
            return TestRun(0, "no test command is configured for this target")
        # The target's test command runs in the sandbox (issue 9); ``env`` is superseded by its allowlist.
        # SandboxUnavailable propagates: the attempt fails executor_error, never an unsandboxed run.
        result = run_sandboxed(command, workspace=self.root, writable=self.task_paths, timeout=timeout)
        if result.timed_out:
            run = TestRun(None, f"the test command did not finish within {timeout:.0f}s")
        else:
            run = TestRun(result.returncode, result.output[-TEST_OUTPUT_TAIL:])
        self._discard_test_leftovers()
        return run

    def _discard_test_leftovers(self) -> None:
        """Undo what the test command wrote (caches, reports), keeping the model's own edits: the diff
        checked by the worker must be the model's change and nothing else."""
        status = subprocess.run(
            ["git", "status", "--porcelain=v1", "-z", "--untracked-files=all"],
            cwd=self.root,
            capture_output=True,
            check=True,
        ).stdout.decode("utf-8", "surrogateescape")
        for entry in filter(None, status.split("\0")):
            code, path = entry[:2], entry[3:]
            if path in self.written or not path:
                continue
            if code == "??":
                (self.root / path).unlink(missing_ok=True)
            else:
                subprocess.run(["git", "checkout", "-q", "HEAD", "--", path], cwd=self.root, check=False)
