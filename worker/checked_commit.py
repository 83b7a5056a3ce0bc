"""Commit exactly what the policy check approved, whatever ran in the workspace after it.

The check (``_checked_changes``) stages the whole worktree and judges that index; ``write_tree`` then
freezes it as a tree object. The test command (and any tool) runs after the check, so anything it
wrote, staged or deleted is compared against that tree, recorded, and thrown away: the index and the
worktree are reset to the checked tree before the backlog write-back, and the commit is verified to
differ from it by the backlog file alone. A ``conftest.py`` that writes ``src/backdoor.py`` and
``git add -f``s it can no longer put it into the pull request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from leviathan_dagster.core.attempts.path_policy import ChangedPath
from leviathan_dagster.core.errors import PolicyViolation
from leviathan_dagster.core.git import commands as gitutil

log = logging.getLogger("leviathan.worker")


def write_tree(workspace: Path) -> str:
    """The tree object of the index as it stands (what the policy check just judged)."""
    return gitutil.run_git(["write-tree"], cwd=workspace).strip()


def discard_unchecked(workspace: Path, checked_tree: str) -> list[str]:
    """Reset index and worktree to ``checked_tree``; return what differed (staged, written, untracked,
    ignored), sorted, so the attempt can record what the tests left behind."""
    staged = _z(
        gitutil.run_git(
            ["diff", "--cached", "--no-ext-diff", "--name-only", "-z", checked_tree], cwd=workspace
        )
    )
    written = _z(gitutil.run_git(["diff", "--no-ext-diff", "--name-only", "-z"], cwd=workspace))
    untracked = _z(gitutil.run_git(["ls-files", "--others", "-z"], cwd=workspace))
    gitutil.run_git(["read-tree", "--reset", "-u", checked_tree], cwd=workspace)
    gitutil.run_git(["clean", "-q", "-f", "-f", "-d", "-x"], cwd=workspace)
    left = sorted(set(staged) | set(written) | set(untracked))
    if left:
        log.info("discarded what ran after the policy check left behind: %s", ", ".join(left[:50]))
    return left


def verify_commit_scope(
    workspace: Path, checked_tree: str, changes: Iterable[ChangedPath], extra: Iterable[str]
) -> None:
    """PolicyViolation unless the index differs from HEAD only in the checked changes, and from the
    checked tree only in ``extra`` (the harness's own write-back)."""
    allowed_since_check = set(extra)
    since_check = set(
        _z(
            gitutil.run_git(
                ["diff", "--cached", "--no-ext-diff", "--name-only", "-z", checked_tree], cwd=workspace
            )
        )
    )
    expected = {
        path for change in changes for path in (change.path, change.old_path) if path
    } | allowed_since_check
    since_head = set(
        _z(gitutil.run_git(["diff", "--cached", "--no-ext-diff", "--name-only", "-z", "HEAD"], cwd=workspace))
    )
    stray = sorted((since_check - allowed_since_check) | (since_head - expected))
    if stray:
        raise PolicyViolation(
            f"the commit would contain paths the policy check never saw: {', '.join(stray)}"
        )


def _z(output: str) -> list[str]:
    return [item for item in output.split("\0") if item]
