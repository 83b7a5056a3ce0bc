"""Boundary-safe path policy: which repository paths a task may touch, checked on the real git diff.

A rule is a repository-relative path. With a trailing ``/`` it names a directory (``docs/`` matches
``docs/a.md`` and ``docs/x/y``); without one it names a file *or* a directory (``docs`` matches the file
``docs`` and everything under a directory ``docs``). Matching is by whole path components, never by
string prefix, so ``docs/`` can never let ``docs2/evil.py`` through. Matching is case-sensitive: git is,
and a case-insensitive checkout (macOS, Windows) must not widen what a rule allows.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from leviathan_dagster.core.errors import PolicyViolation, TransientError
from leviathan_dagster.core.git import commands as gitutil
from leviathan_dagster.core.git.hardening import hardening_args

# The hash of git's empty tree: what a repository without commits is diffed against.
_EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
# Entries of the path caches below: above the task count of a large fleet (100 targets x 1,000 tasks),
# so a tick's cyclic walk over every task never evicts what the next tick needs.
_CACHE_SIZE = 262_144


def normalize_repo_path(path: str) -> str:
    """Return ``path`` in canonical repository form, or raise PolicyViolation saying why it is refused.

    A leading ``./`` (and any ``.`` component) is dropped and ``//`` collapsed; a trailing ``/`` is kept
    because it means "directory". Absolute paths, ``..`` components, backslashes, NUL and empty paths are
    refused: each of them can name something outside the repository or means different things on
    different platforms.
    """
    if not isinstance(path, str) or path == "":
        raise PolicyViolation("empty path: name a file or a directory relative to the repository root")
    return _normalize(path)


# Pure, and called for the same paths on every tick (backlog parse, readiness, diff checks): a bounded
# cache makes each distinct path cost once. Refusals raise, so they are never cached.
@lru_cache(maxsize=_CACHE_SIZE)
def _normalize(path: str) -> str:
    if "\x00" in path:
        raise PolicyViolation(f"{path!r}: NUL bytes are not allowed in paths")
    if "\\" in path:
        raise PolicyViolation(f"{path!r}: backslashes are not allowed in paths; use '/' as the separator")
    if path.startswith("/") or _DRIVE_RE.match(path):
        raise PolicyViolation(
            f"{path!r}: absolute paths are not allowed; write it relative to the repository root"
        )
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PolicyViolation(f"{path!r}: '..' components are not allowed")
    if not parts:
        raise PolicyViolation(f"{path!r} names the repository root; name a file or a directory inside it")
    normalized = "/".join(parts) + ("/" if path.endswith("/") else "")
    return path if normalized == path else normalized  # keep one string object per cached path


def _split(path: str) -> tuple[str, bool]:
    """(path without trailing slash, whether it named a directory)."""
    return (path[:-1], True) if path.endswith("/") else (path, False)


def path_matches(path: str, rule: str) -> bool:
    """Whether ``rule`` allows ``path`` (both normalized first; see the module docstring).

    A path that cannot be normalized is never matched; a rule that cannot be normalized raises
    PolicyViolation, because that is a configuration error rather than a hostile change.
    """
    rule_core, rule_is_dir = _split(normalize_repo_path(rule))
    try:
        path_core, path_is_dir = _split(normalize_repo_path(path))
    except PolicyViolation:
        return False
    if path_core.startswith(rule_core + "/"):
        return True
    # Equal cores: a directory rule allows the directory itself but not a *file* of that name.
    return path_core == rule_core and (path_is_dir or not rule_is_dir)


def paths_within(paths: Iterable[str], rules: Iterable[str]) -> list[str]:
    """Return the paths that no rule matches (the violations), in input order."""
    rules = list(rules)
    return [path for path in paths if not any(path_matches(path, rule) for rule in rules)]


def _rule_inside(rule: tuple[str, bool], prefix: tuple[str, bool]) -> bool:
    """Whether every path ``rule`` can match is also matched by ``prefix`` (both normalized and split)."""
    (rule_core, rule_is_dir), (prefix_core, prefix_is_dir) = rule, prefix
    if rule_core.startswith(prefix_core + "/"):
        return True
    if rule_core != prefix_core:
        return False
    # Same name: a plain rule 'docs' also matches a *file* 'docs', which the prefix 'docs/' does not allow.
    return rule_is_dir or not prefix_is_dir


def task_paths_in_scope(allowed_paths: Iterable[str], prefixes: Iterable[str]) -> list[str]:
    """Return the task's allowed paths that are not inside any of the target's prefixes.

    A task path R is inside a prefix P iff every path R can match is matched by P: ``docs/sub/`` and
    ``docs/a.md`` are inside ``docs/``; ``docs`` is not (it may be a file named ``docs``), nor is ``docs2/``.
    Task paths that cannot be normalized are returned as out of scope.
    """
    return list(_paths_outside(tuple(allowed_paths), _split_prefixes(tuple(prefixes))))


@lru_cache(maxsize=1_024)
def _split_prefixes(prefixes: tuple[str, ...]) -> tuple[tuple[str, bool], ...]:
    return tuple(_split(normalize_repo_path(prefix)) for prefix in prefixes)


# Readiness asks this for every task of every target on every tick (100 x 1,000 tasks: 40% of the
# decision when it normalised each path once per prefix). The verdict is pure and the backlog is the
# same between ticks, so it is cached per (task paths, target prefixes); a miss normalises each path once.
@lru_cache(maxsize=_CACHE_SIZE)
def _paths_outside(allowed_paths: tuple[str, ...], prefixes: tuple[tuple[str, bool], ...]) -> tuple[str, ...]:
    outside = []
    for rule in allowed_paths:
        try:
            split = _split(normalize_repo_path(rule))
        except PolicyViolation:
            outside.append(rule)
            continue
        if not any(_rule_inside(split, prefix) for prefix in prefixes):
            outside.append(rule)
    return tuple(outside)


@dataclass(frozen=True)
class ChangedPath:
    """One entry of a workspace's diff against HEAD."""

    status: str  # 'A' added, 'M' modified, 'D' deleted, 'R' renamed, 'T' type change
    path: str
    old_path: str | None = None


def _git(workspace: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    # Raw bytes (paths may not be UTF-8), but as hardened as every other git call: the workspace is the
    # target's, and its config must not get to run a program here.
    command = ["git", *hardening_args(workspace), *args]
    return subprocess.run(command, cwd=workspace, env=gitutil.git_env(), capture_output=True, check=False)


def list_changed_paths(workspace: Path) -> list[ChangedPath]:
    """Every change of ``workspace`` against HEAD, untracked files included, sorted by path.

    This stages the whole worktree (``git add -A``): what is checked is then exactly what a commit of the
    workspace would contain, including files a generator created but nobody staged. Ignored files are
    left out for the same reason: they cannot reach the pull request. A failing git command (a stale
    index.lock, a full disk) raises TransientError: it is not the task's fault.
    """
    added = _git(workspace, "add", "-A")
    if added.returncode != 0:
        raise TransientError(f"git add -A failed in {workspace}: {added.stderr.decode(errors='replace')}")
    name_status = ("diff", "--cached", "--no-ext-diff", "--no-color", "--name-status", "-z", "-M")
    diff = _git(workspace, *name_status, "HEAD")
    # Only a failed diff asks whether there is a HEAD at all (a repository without commits is diffed
    # against the empty tree): one git command fewer in the usual case.
    if diff.returncode != 0 and _git(workspace, "rev-parse", "--verify", "--quiet", "HEAD").returncode != 0:
        diff = _git(workspace, *name_status, _EMPTY_TREE)
    if diff.returncode != 0:
        raise TransientError(f"git diff failed in {workspace}: {diff.stderr.decode(errors='replace')}")
    # -z output: "STATUS\0path\0", and for renames "R<score>\0old\0new\0". Paths are raw bytes;
    # surrogateescape keeps undecodable names round-trippable so they reach the checks instead of crashing.
    fields = diff.stdout.decode("utf-8", errors="surrogateescape").split("\0")
    changes: list[ChangedPath] = []
    i = 0
    while i < len(fields) and fields[i]:
        status = fields[i][0]
        if status in ("R", "C"):
            old, new = fields[i + 1], fields[i + 2]
            # A copy leaves its source untouched, so only the new path is a change.
            changes.append(ChangedPath("R", new, old) if status == "R" else ChangedPath("A", new))
            i += 3
        else:
            changes.append(ChangedPath(status, fields[i + 1]))
            i += 2
    return sorted(changes, key=lambda c: (c.path, c.status, c.old_path or ""))


# Characters HFS+ ignores in names (git's is_hfs_dotgit): '.g\u200cit' is '.git' on a Mac.
_HFS_IGNORED = re.compile("[\u200c-\u200f\u202a-\u202e\u206a-\u206f\ufeff]")


def _is_git_dir_component(part: str) -> bool:
    # Windows ignores trailing dots and spaces, knows '.git' by its 8.3 name 'git~1' and reads
    # '.git::$INDEX_ALLOCATION' as '.git'; macOS folds case and ignores some invisible characters.
    # Any of these spellings can reach the real .git directory on some checkout.
    folded = _HFS_IGNORED.sub("", part).split(":", 1)[0].lower().rstrip(". ")
    return folded in (".git", "git~1")


def check_policy_path(path: str) -> str:
    """``path`` normalized (see ``normalize_repo_path``) for a task's ``allowed_paths`` or a target's
    ``allowed_path_prefixes``; PolicyViolation when it names a ``.git`` directory in any spelling, which
    git refuses to check out and the diff check refuses anyway: such a rule could never be used."""
    normalized = normalize_repo_path(path)
    for part in normalized.split("/"):
        if _is_git_dir_component(part):
            raise PolicyViolation(
                f"{path!r}: {part!r} is a .git directory (in some spelling); nothing there may be changed"
            )
    return normalized


def _check_one(path: str, role: str, rules: list[str]) -> str | None:
    """A violation message for one path of a change, or None if it is allowed."""
    try:
        normalized = normalize_repo_path(path)
    except PolicyViolation as exc:
        return f"{role}{path!r} is not a valid repository path: {exc}"
    if normalized != path:
        return (
            f"{role}{path!r} is not in canonical form (it normalizes to {normalized!r}): refused as a trick"
        )
    if any(_is_git_dir_component(part) for part in path.split("/")):
        return f"{role}{path!r} is inside a .git directory; changes there are never allowed"
    if any(path_matches(path, rule) for rule in rules):
        return None
    for rule in rules:
        if path_matches(path.lower(), rule.lower()):
            return f"{role}{path!r} is not allowed: paths are case-sensitive and {rule!r} was allowed"
    return f"{role}{path!r} is not allowed (allowed: {', '.join(rules) or 'nothing'})"


def _check_symlink(workspace: Path, path: str, rules: list[str]) -> str | None:
    """A violation if ``path`` is a symlink leaving the workspace or pointing at a disallowed path."""
    full = workspace / path
    try:
        if not stat.S_ISLNK(os.lstat(full).st_mode):
            return None
    except OSError:
        return None
    root = os.path.realpath(workspace)
    target = os.path.realpath(full)
    if os.path.commonpath([root, target]) != root:
        return f"symlink {path!r} points outside the workspace ({os.readlink(full)!r})"
    relative = os.path.relpath(target, root).replace(os.sep, "/")
    if relative == "." or any(_is_git_dir_component(part) for part in relative.split("/")):
        return f"symlink {path!r} points to {relative!r}, which is never allowed"
    if not any(path_matches(relative, rule) for rule in rules):
        return f"symlink {path!r} points to {relative!r}, which is not allowed"
    return None


def check_changed_paths(workspace: Path, changes: list[ChangedPath], allowed: Iterable[str]) -> list[str]:
    """Return human-readable violations of ``changes`` against the ``allowed`` rules (empty: all fine).

    Both sides of a rename are checked (moving a file out of scope deletes it there). Symlinks in the
    worktree are followed: a link inside ``docs/`` pointing at ``src/`` or ``/etc`` would let a later
    step read or write through it.
    """
    rules = [normalize_repo_path(rule) for rule in allowed]
    violations: list[str] = []
    for change in changes:
        if change.old_path is not None:
            problem = _check_one(change.old_path, f"rename source (to {change.path!r}) ", rules)
            if problem:
                violations.append(problem)
        role = f"rename target (from {change.old_path!r}) " if change.old_path is not None else ""
        problem = _check_one(change.path, role, rules)
        if problem:
            violations.append(problem)
        elif change.status != "D":
            link_problem = _check_symlink(workspace, change.path, rules)
            if link_problem:
                violations.append(link_problem)
    return violations
