"""The Claude generator's view of the checkout: read anywhere, write only in scope.

Reads (Anthropic's text editor ``view``, ``find_files``, ``grep``) reach every file of the checkout
except ``.git/`` internals; every path is resolved on disk, so a symlink cannot lead outside the
workspace or into ``.git``. Writes (``create``, ``str_replace``, ``insert``, ``delete_file``) must
stay inside the scope: the task's ``allowed_paths`` intersected with the target's
``allowed_path_prefixes``, matched with the diff check's own boundary-safe rules (``core.paths``), and
never the backlog. An out-of-scope write is never executed: it raises ``OutOfScope``, which the loop
returns to the model as a tool error and records. The check on the actual diff before commit stays
the final authority.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from leviathan_dagster.core.attempts.path_policy import normalize_repo_path, path_matches
from leviathan_dagster.core.errors import PolicyViolation
from leviathan_dagster.core.models import BACKLOG_PATH

# The checkout as the model sees it: paths are relative to the root, or absolute under this name.
VIRTUAL_ROOT = "/repo"
MAX_VIEW_CHARS = 60_000
MAX_FILE_BYTES = 10_000_000
DIRECTORY_DEPTH = 2


class ToolError(Exception):
    """A bad tool call the model can correct: returned to it as an error result."""


class OutOfWorkspace(ToolError):
    """A path outside the checkout, in ``.git``, or resolving there through a symlink: never read."""


class OutOfScope(ToolError):
    """A write outside the task's scope (or to the backlog, or into .git): refused, never executed."""


def _in_git_dir(relative: str) -> bool:
    # ``git~1`` is .git's 8.3 short name on Windows checkouts; trailing dots/spaces are dropped there.
    return any(part.lower().rstrip(". ") in (".git", "git~1") for part in relative.split("/"))


class ScopedWorkspace:
    """File operations on the workspace, each checked before it touches the disk."""

    def __init__(self, root: Path, task_paths: tuple[str, ...], prefixes: tuple[str, ...]) -> None:
        self.root = root.resolve()
        self.task_paths, self.prefixes = task_paths, prefixes
        self.written: set[str] = set()

    # -- paths ---------------------------------------------------------------------------------------
    def in_scope(self, path: str) -> bool:
        return any(path_matches(path, r) for r in self.task_paths) and any(
            path_matches(path, r) for r in self.prefixes
        )

    def locate(self, path: object) -> tuple[str, Path]:
        """The normalized path and its location for reading; ToolError outside the workspace or in .git."""
        if not isinstance(path, str) or not path.strip():
            raise ToolError("'path' must be a non-empty string")
        relative = path.strip()
        for root in (VIRTUAL_ROOT, str(self.root)):
            if relative == root or relative.startswith(root + "/"):
                relative = relative[len(root) :].lstrip("/") or "."
        if relative in (".", "./"):
            return "", self.root
        try:
            normalized = normalize_repo_path(relative).rstrip("/")
        except PolicyViolation as exc:
            raise OutOfWorkspace(f"{exc} (the repository is {VIRTUAL_ROOT})") from None
        if _in_git_dir(normalized):
            raise OutOfWorkspace(f"{path!r} is inside git's own directory, which is not part of the checkout")
        full = self.root / normalized
        real = Path(os.path.realpath(full))
        if real != self.root and self.root not in real.parents:
            raise OutOfWorkspace(f"{path!r} resolves outside the repository")
        if _in_git_dir(real.relative_to(self.root).as_posix()):
            raise OutOfWorkspace(f"{path!r} resolves into git's own directory")
        return normalized, full

    def check_write(self, path: object) -> tuple[str, Path]:
        """The normalized path and its location for writing; OutOfScope if it may not be written."""
        try:
            normalized, full = self.locate(path)
        except ToolError as exc:
            raise OutOfScope(f"write refused: {exc}") from None
        if normalized == BACKLOG_PATH:
            raise OutOfScope(f"write refused: {path!r} is the backlog; the harness writes it back, never you")
        if not normalized or not self.in_scope(normalized):
            raise OutOfScope(
                f"write refused: {path!r} is outside the paths this task may change "
                f"({', '.join(self.task_paths)}); you may read any file, but change only those"
            )
        relative = Path(os.path.realpath(full)).relative_to(self.root).as_posix()
        if relative != normalized and not self.in_scope(relative):
            raise OutOfScope(f"write refused: {path!r} resolves to {relative!r}, outside the allowed paths")
        return normalized, full

    def files(self) -> list[str]:
        """Every file of the checkout git would see (tracked, plus untracked not ignored), sorted."""
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=self.root,
            capture_output=True,
            check=False,
        )
        names = listed.stdout.decode("utf-8", "surrogateescape").split("\0") if listed.returncode == 0 else []
        found = []
        for name in sorted(set(filter(None, names))):
            try:
                _, full = self.locate(name)
            except ToolError:
                continue  # a symlink out of the workspace is not shown
            if full.is_file():
                found.append(name)
        return found

    # -- the text editor tool (str_replace_based_edit_tool) -----------------------------------------
    def editor(self, command: object = None, **args: object) -> str:
        handlers = {"view": self.view, "create": self.create, "str_replace": self.str_replace}
        handlers["insert"] = self.insert
        handler = handlers.get(command) if isinstance(command, str) else None
        if handler is None:
            raise ToolError(f"unknown command {command!r}; use one of: {', '.join(handlers)}")
        return handler(**args)

    def view(self, path: object, view_range: object = None) -> str:
        normalized, full = self.locate(path)
        if full.is_dir():
            return self._view_directory(normalized, full)
        text = self._read_text(path, full)
        lines = text.splitlines()
        start, end = 1, len(lines)
        if view_range is not None:
            if (
                not isinstance(view_range, list)
                or len(view_range) != 2
                or not all(isinstance(n, int) for n in view_range)
            ):
                raise ToolError("'view_range' must be [start_line, end_line] (end_line -1: to the end)")
            start, end = view_range[0], len(lines) if view_range[1] == -1 else view_range[1]
            if start < 1 or start > max(1, len(lines)) or end < start:
                raise ToolError(f"'view_range' {view_range} is invalid: the file has {len(lines)} lines")
        numbered = "\n".join(f"{n:6}\t{lines[n - 1]}" for n in range(start, min(end, len(lines)) + 1))
        if len(numbered) > MAX_VIEW_CHARS:
            cut = numbered[:MAX_VIEW_CHARS].rsplit("\n", 1)[0]
            return cut + f"\n[... truncated at {MAX_VIEW_CHARS} characters; use view_range to see the rest]"
        return numbered or "(empty file)"

    def create(self, path: object, file_text: object) -> str:
        normalized, full = self.check_write(path)
        if not isinstance(file_text, str):
            raise ToolError("'file_text' must be a string")
        if full.is_dir():
            raise ToolError(f"{normalized!r} is a directory")
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(file_text, encoding="utf-8")
        self.written.add(normalized)
        return f"wrote {normalized} ({len(file_text.encode())} bytes)"

    def str_replace(self, path: object, old_str: object, new_str: object = "") -> str:
        normalized, full = self.check_write(path)
        if not isinstance(old_str, str) or not old_str or not isinstance(new_str, str):
            raise ToolError("'old_str' must be a non-empty string and 'new_str' a string")
        text = self._read_text(path, full)
        count = text.count(old_str)
        if count != 1:
            raise ToolError(
                f"old_str occurs {count} times in {normalized}; it must occur exactly once "
                "(include more surrounding lines to make it unique)"
            )
        line = text[: text.index(old_str)].count("\n") + 1
        full.write_text(text.replace(old_str, new_str), encoding="utf-8")
        self.written.add(normalized)
        return f"edited {normalized}: replaced 1 occurrence at line {line}"

    def insert(self, path: object, insert_line: object, insert_text: object = None, **legacy) -> str:
        normalized, full = self.check_write(path)
        text_value = insert_text if insert_text is not None else legacy.get("new_str")
        if not isinstance(insert_line, int) or not isinstance(text_value, str):
            raise ToolError("'insert_line' must be a line number and 'insert_text' a string")
        lines = self._read_text(path, full).splitlines(keepends=True)
        if not 0 <= insert_line <= len(lines):
            raise ToolError(f"'insert_line' {insert_line} is out of range (0..{len(lines)})")
        if lines and not lines[-1].endswith("\n") and insert_line == len(lines):
            lines[-1] += "\n"
        block = text_value if text_value.endswith("\n") else text_value + "\n"
        lines.insert(insert_line, block)
        full.write_text("".join(lines), encoding="utf-8")
        self.written.add(normalized)
        return f"edited {normalized}: inserted after line {insert_line}"

    def delete_file(self, path: object) -> str:
        normalized, full = self.check_write(path)
        if not full.is_file() and not full.is_symlink():
            raise ToolError(f"{normalized!r} does not exist or is not a file")
        full.unlink()
        self.written.add(normalized)
        return f"deleted {normalized}"

    def _read_text(self, path: object, full: Path) -> str:
        if not full.is_file():
            raise ToolError(f"{path!r} does not exist or is not a file")
        if full.stat().st_size > MAX_FILE_BYTES:
            raise ToolError(f"{path!r} is larger than {MAX_FILE_BYTES} bytes; search it with grep instead")
        data = full.read_bytes()
        if b"\0" in data[:8192]:
            raise ToolError(f"{path!r} is a binary file ({len(data)} bytes)")
        return data.decode("utf-8", errors="replace")

    def _view_directory(self, normalized: str, full: Path) -> str:
        prefix = f"{normalized}/" if normalized else ""
        shown = sorted(
            {
                "/".join(name[len(prefix) :].split("/")[:DIRECTORY_DEPTH])
                for name in self.files()
                if name.startswith(prefix)
            }
        )
        if not shown:
            raise ToolError(f"{normalized or '.'!r} has no files")
        return f"files in {normalized or '.'} (up to {DIRECTORY_DEPTH} levels deep):\n" + "\n".join(shown)

    def run_tests(self, command: tuple[str, ...], env: Mapping[str, str], timeout: float):
        """The target's test command in the sandbox (``claude_commands.run_tests``)."""
        from leviathan_dagster.core.generators.claude.commands import run_tests

        return run_tests(self, command, env, timeout)

    @property
    def writable(self) -> list[str]:
        """The scope as sandbox-writable entries: each task path inside a prefix, or the prefix inside it."""
        scope = []
        for task_path in self.task_paths:
            for prefix in self.prefixes:
                if path_matches(task_path, prefix):
                    scope.append(task_path)
                elif path_matches(prefix, task_path):
                    scope.append(prefix)
        return [entry for entry in dict.fromkeys(scope) if entry != BACKLOG_PATH]
