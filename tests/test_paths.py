"""The path policy: matching by whole components, and checks of real git diffs in temporary repositories."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from leviathan_dagster.core.attempts.path_policy import (
    ChangedPath,
    check_changed_paths,
    list_changed_paths,
    normalize_repo_path,
    path_matches,
    paths_within,
    task_paths_in_scope,
)
from leviathan_dagster.core.errors import PolicyViolation, TransientError


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one commit holding docs/a.md, docs/b.md and src/app.py."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "config", "user.name", "Test")
    git(repo, "config", "user.email", "test@example.com")
    for path, text in {"docs/a.md": "a\n", "docs/b.md": "b\n", "src/app.py": "print('app')\n" * 20}.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "initial")
    return repo


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("docs/a.md", "docs/a.md"),
        ("./docs/a.md", "docs/a.md"),
        ("docs//sub///a.md", "docs/sub/a.md"),
        ("docs/./a.md", "docs/a.md"),
        ("docs/", "docs/"),
        ("./docs//", "docs/"),
    ],
)
def test_normalize_repo_path(raw: str, normalized: str) -> None:
    assert normalize_repo_path(raw) == normalized


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("C:/x", "absolute"),
        ("../x", "'..'"),
        ("docs/../../x", "'..'"),
        ("docs\\a.md", "backslash"),
        ("docs/a\x00.md", "NUL"),
        ("./", "repository root"),
    ],
)
def test_normalize_repo_path_refuses(raw: str, reason: str) -> None:
    with pytest.raises(PolicyViolation, match=reason):
        normalize_repo_path(raw)


@pytest.mark.parametrize(
    ("path", "rule", "expected"),
    [
        ("docs/a.md", "docs/", True),
        ("docs/x/y", "docs/", True),
        ("docs2/a.md", "docs/", False),
        ("docs", "docs/", False),  # a file named docs is not the directory docs/
        ("docs/", "docs/", True),
        ("docs", "docs", True),
        ("docs/x", "docs", True),
        ("docs2", "docs", False),
        ("docs.md", "docs", False),
        ("docs/a.md", "docs/a.md", True),
        ("docs/a.md.bak", "docs/a.md", False),
        ("docs/b.md", "docs/a.md", False),
        ("./docs/a.md", "docs/", True),
        ("docs//a.md", "./docs/", True),
        ("docs/../src/app.py", "docs/", False),
        ("../docs/a.md", "docs/", False),
        ("/docs/a.md", "docs/", False),
        ("DOCS/x", "docs/", False),
        ("Docs/a.md", "docs/", False),
    ],
)
def test_path_matches(path: str, rule: str, expected: bool) -> None:
    assert path_matches(path, rule) is expected


def test_path_matches_bad_rule_raises() -> None:
    with pytest.raises(PolicyViolation):
        path_matches("docs/a.md", "../docs/")


def test_paths_within_returns_violations_in_order() -> None:
    paths = ["docs/a.md", "src/app.py", "docs2/x", ".leviathan/backlog.yaml", "../etc"]
    assert paths_within(paths, ["docs/", ".leviathan/"]) == ["src/app.py", "docs2/x", "../etc"]


@pytest.mark.parametrize(
    ("allowed", "prefix", "inside"),
    [
        ("docs/", "docs/", True),
        ("docs/sub/", "docs/", True),
        ("docs/a.md", "docs/", True),
        ("docs", "docs/", False),  # may be a file named docs
        ("docs", "docs", True),
        ("docs/", "docs", True),
        ("docs2/", "docs/", False),
        ("docs.md", "docs", False),
        ("./docs/a.md", "docs/", True),
        ("../docs/a.md", "docs/", False),
        ("Docs/a.md", "docs/", False),
    ],
)
def test_task_paths_in_scope(allowed: str, prefix: str, inside: bool) -> None:
    assert task_paths_in_scope([allowed], [prefix]) == ([] if inside else [allowed])


def test_task_paths_in_scope_any_prefix() -> None:
    allowed = ["docs/a.md", ".leviathan/backlog.yaml", "src/"]
    assert task_paths_in_scope(allowed, ["docs/", ".leviathan/"]) == ["src/"]


def test_list_changed_paths_sees_every_kind_of_change(repo: Path) -> None:
    (repo / "docs/a.md").write_text("changed\n")
    (repo / "docs/b.md").unlink()
    (repo / "docs/new dir").mkdir()
    (repo / "docs/new dir/ü.md").write_text("untracked, never staged\n")
    (repo / "src").rename(repo / "lib")
    assert list_changed_paths(repo) == [
        ChangedPath("M", "docs/a.md"),
        ChangedPath("D", "docs/b.md"),
        ChangedPath("A", "docs/new dir/ü.md"),
        ChangedPath("R", "lib/app.py", "src/app.py"),
    ]


def test_list_changed_paths_without_commits(tmp_path: Path) -> None:
    git(tmp_path, "init", "--quiet")
    (tmp_path / "a.md").write_text("a\n")
    assert list_changed_paths(tmp_path) == [ChangedPath("A", "a.md")]


def test_list_changed_paths_clean_repo(repo: Path) -> None:
    assert list_changed_paths(repo) == []


def test_list_changed_paths_git_failure_is_transient(repo: Path) -> None:
    (repo / ".git" / "index.lock").write_text("")  # another git process holds the index
    (repo / "docs/a.md").write_text("changed\n")
    with pytest.raises(TransientError, match="git add -A failed"):
        list_changed_paths(repo)


def test_in_scope_changes_pass(repo: Path) -> None:
    (repo / "docs/a.md").write_text("changed\n")
    (repo / "docs/c.md").write_text("new\n")
    (repo / "docs/b.md").unlink()
    assert check_changed_paths(repo, list_changed_paths(repo), ["docs/"]) == []


@pytest.mark.parametrize("kind", ["added", "modified", "deleted"])
def test_out_of_scope_change_is_reported(repo: Path, kind: str) -> None:
    if kind == "added":
        (repo / "src/new.py").write_text("x = 1\n")
        path = "src/new.py"
    elif kind == "modified":
        (repo / "src/app.py").write_text("changed\n")
        path = "src/app.py"
    else:
        (repo / "src/app.py").unlink()
        path = "src/app.py"
    violations = check_changed_paths(repo, list_changed_paths(repo), ["docs/"])
    assert violations == [f"'{path}' is not allowed (allowed: docs/)"]


def test_prefix_lookalike_directory_is_reported(repo: Path) -> None:
    (repo / "docs2").mkdir()
    (repo / "docs2/evil.md").write_text("x\n")
    assert check_changed_paths(repo, list_changed_paths(repo), ["docs/"]) == [
        "'docs2/evil.md' is not allowed (allowed: docs/)"
    ]


def test_rename_out_of_scope_is_reported(repo: Path) -> None:
    (repo / "docs/a.md").rename(repo / "src/a.md")
    changes = list_changed_paths(repo)
    assert changes == [ChangedPath("R", "src/a.md", "docs/a.md")]
    assert check_changed_paths(repo, changes, ["docs/"]) == [
        "rename target (from 'docs/a.md') 'src/a.md' is not allowed (allowed: docs/)"
    ]


def test_rename_from_out_of_scope_is_reported(repo: Path) -> None:
    (repo / "src/app.py").rename(repo / "docs/app.py")
    changes = list_changed_paths(repo)
    assert changes == [ChangedPath("R", "docs/app.py", "src/app.py")]
    assert check_changed_paths(repo, changes, ["docs/"]) == [
        "rename source (to 'docs/app.py') 'src/app.py' is not allowed (allowed: docs/)"
    ]


def test_case_only_difference_is_explained(repo: Path) -> None:
    (repo / "Docs").mkdir()
    (repo / "Docs/x.md").write_text("x\n")
    violations = check_changed_paths(repo, list_changed_paths(repo), ["docs/"])
    assert violations == ["'Docs/x.md' is not allowed: paths are case-sensitive and 'docs/' was allowed"]


def test_symlink_pointing_outside_the_workspace(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("s3cr3t\n")
    os.symlink(tmp_path / "secret.txt", repo / "docs/link.md")
    os.symlink("../../secret.txt", repo / "docs/relative-link.md")
    violations = check_changed_paths(repo, list_changed_paths(repo), ["docs/"])
    assert len(violations) == 2
    assert violations[0].startswith("symlink 'docs/link.md' points outside the workspace")
    assert (
        violations[1] == "symlink 'docs/relative-link.md' points outside the workspace ('../../secret.txt')"
    )


def test_symlink_pointing_to_a_disallowed_path_in_the_repo(repo: Path) -> None:
    os.symlink("../src/app.py", repo / "docs/app.md")
    violations = check_changed_paths(repo, list_changed_paths(repo), ["docs/"])
    assert violations == ["symlink 'docs/app.md' points to 'src/app.py', which is not allowed"]


def test_symlink_within_allowed_paths_passes(repo: Path) -> None:
    os.symlink("a.md", repo / "docs/alias.md")
    assert check_changed_paths(repo, list_changed_paths(repo), ["docs/"]) == []


def test_symlink_into_git_dir_is_reported(repo: Path) -> None:
    os.symlink("../.git/config", repo / "docs/config")
    violations = check_changed_paths(repo, list_changed_paths(repo), ["docs/"])
    assert violations == ["symlink 'docs/config' points to '.git/config', which is never allowed"]


@pytest.mark.parametrize(
    "path", [".git/config", "docs/.git/hooks/pre-commit", "docs/.GIT/x", "docs/.git./x", "docs/GIT~1/x"]
)
def test_git_dir_like_paths_are_reported(repo: Path, path: str) -> None:
    violations = check_changed_paths(repo, [ChangedPath("A", path)], ["docs/", ".git/"])
    assert violations == [f"'{path}' is inside a .git directory; changes there are never allowed"]


@pytest.mark.parametrize("path", ["./docs/a.md", "docs//a.md", "docs/./a.md"])
def test_non_canonical_paths_are_reported(repo: Path, path: str) -> None:
    violations = check_changed_paths(repo, [ChangedPath("M", path)], ["docs/"])
    assert violations == [
        f"{path!r} is not in canonical form (it normalizes to 'docs/a.md'): refused as a trick"
    ]


@pytest.mark.parametrize("path", ["../docs/a.md", "/etc/passwd", "docs\\a.md"])
def test_invalid_paths_are_reported(repo: Path, path: str) -> None:
    [violation] = check_changed_paths(repo, [ChangedPath("A", path)], ["docs/"])
    assert violation.startswith(f"{path!r} is not a valid repository path")
