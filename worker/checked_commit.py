"""Commit exactly what the policy check approved, whatever ran in the workspace after it.

The check (``_checked_changes``) stages the whole worktree and judges that index; ``write_tree`` then
freezes it as a tree object. The test command (and any tool) runs after the check, so anything it
wrote, staged or deleted is compared against that tree, recorded, and thrown away: the index and the
worktree are reset to the checked tree before the backlog write-back, and the tree that is committed is
verified to differ from the checked one by the backlog file alone. A ``conftest.py`` that writes
``src/backdoor.py`` and ``git add -f``s it can no longer put it into the pull request.

The commit is built with plumbing (``write-tree``, ``commit-tree``) from that verified tree, on the
commit the check diffed against: no branch is checked out, nothing is re-read to learn its sha.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from leviathan_dagster.core.errors import PolicyViolation
from leviathan_dagster.core.git import commands as gitutil

log = logging.getLogger("leviathan.worker")

_INDEX = Path(".git") / "index"


class Leftovers(NamedTuple):
    """What ``discard_unchecked`` found and threw away, and the commit HEAD names (a NamedTuple: a
    dataclass costs the worker's start-up several generated functions, compiled at import)."""

    paths: list[str]  # sorted: staged, written, untracked or ignored after the check
    head: str | None  # HEAD's commit sha; None on a repository without commits


def write_tree(workspace: Path) -> str:
    """The tree object of the index as it stands (what the policy check just judged)."""
    return gitutil.run_git(["write-tree"], cwd=workspace).strip()


def index_digest(workspace: Path) -> str | None:
    """SHA-256 of the index file's bytes (None without one): equal digests mean an unchanged index, so
    the check for what was staged after the policy check needs no git command in the usual case."""
    try:
        return hashlib.sha256((workspace / _INDEX).read_bytes()).hexdigest()
    except OSError:
        return None


def discard_unchecked(workspace: Path, checked_tree: str, *, checked_index: str | None = None) -> Leftovers:
    """Reset index and worktree to ``checked_tree``; return what differed (staged, written, untracked,
    ignored), sorted, so the attempt can record what the tests left behind, and HEAD's commit.

    ``checked_index``: ``index_digest`` taken right after ``write_tree``; when the index still has those
    bytes nothing was staged since. One ``git status`` then finds everything else; with nothing found,
    index and worktree already are the checked tree and there is nothing to reset.
    """
    if checked_index is not None and index_digest(workspace) == checked_index:
        staged: list[str] = []
    else:
        staged = _z(
            gitutil.run_git(
                ["diff", "--cached", "--no-ext-diff", "--name-only", "-z", checked_tree], cwd=workspace
            )
        )
    head, unstaged = _status(workspace)
    left = sorted(set(staged) | set(unstaged))
    if left:
        gitutil.run_git(["read-tree", "--reset", "-u", checked_tree], cwd=workspace)
        gitutil.run_git(["clean", "-q", "-f", "-f", "-d", "-x"], cwd=workspace)
        log.info("discarded what ran after the policy check left behind: %s", ", ".join(left[:50]))
    return Leftovers(left, head)


def _status(workspace: Path) -> tuple[str | None, list[str]]:
    """(HEAD's commit, paths whose worktree differs from the index or that are untracked or ignored).

    Porcelain v2 with ``--branch`` names HEAD's commit in the same answer (``# branch.oid``). Each
    ignored file is listed by itself (``traditional``), as ``ls-files --others`` lists them.
    """
    out = gitutil.run_git(
        [
            "status",
            "--porcelain=v2",
            "--branch",
            "-z",
            "--untracked-files=all",
            "--ignored=traditional",
            "--no-renames",
        ],
        cwd=workspace,
    )
    head: str | None = None
    paths: list[str] = []
    for record in _z(out):
        kind = record[:1]
        if record.startswith("# branch.oid "):
            oid = record[len("# branch.oid ") :]
            head = None if oid == "(initial)" else oid
        elif kind in ("?", "!"):
            paths.append(record[2:])
        elif kind == "1":  # "1 XY sub mH mI mW hH hI path": Y is the worktree against the index
            fields = record.split(" ", 8)
            if fields[1][1] != ".":
                paths.append(fields[8])
        elif kind == "u":  # an unmerged entry cannot come from the checked index: whatever it is, discard
            paths.append(record.split(" ", 10)[10])
    return head, paths


def verify_commit_scope(workspace: Path, checked_tree: str, extra: Iterable[str]) -> str:
    """The index as a tree, after PolicyViolation unless it differs from ``checked_tree`` only in
    ``extra`` (the harness's own write-back).

    Checked against the checked tree alone: that tree differs from HEAD by exactly the changes the
    policy check approved (it is the index the check diffed, frozen), so a tree within ``extra`` of it
    is within those changes and ``extra`` of HEAD too.
    """
    tree = write_tree(workspace)
    since_check = _z(
        gitutil.run_git(
            ["diff-tree", "-r", "--no-ext-diff", "--no-renames", "--name-only", "-z", checked_tree, tree],
            cwd=workspace,
        )
    )
    stray = sorted(set(since_check) - set(extra))
    if stray:
        raise PolicyViolation(
            f"the commit would contain paths the policy check never saw: {', '.join(stray)}"
        )
    return tree


def commit_tree(workspace: Path, tree: str, parent: str | None, message: str) -> str:
    """Commit ``tree`` on ``parent`` (no branch moves, no hook runs); return the new commit's sha."""
    parents = ["-p", parent] if parent else []
    return gitutil.run_git(
        ["commit-tree", tree, *parents, "-m", clean_message(message)], cwd=workspace
    ).strip()


def clean_message(message: str) -> str:
    """``message`` as ``git commit -m`` stores it (its "whitespace" cleanup): trailing whitespace off
    every line, runs of blank lines made one, none at either end, one final newline."""
    lines: list[str] = []
    for line in message.splitlines():
        line = line.rstrip()
        if line or (lines and lines[-1]):
            lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


def _z(output: str) -> list[str]:
    return [item for item in output.split("\0") if item]
