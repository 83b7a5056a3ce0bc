"""The sandbox (core/sandbox): what code Leviathan did not write can and cannot do inside it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leviathan_dagster.core import sandbox
from leviathan_dagster.core.sandbox import SandboxUnavailable, run_sandboxed, sandbox_problem

CANARY = "canary-sandbox-4f1e9b7d"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "docs").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("print('hi')\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def sh(script: str, workspace: Path, **kwargs) -> sandbox.SandboxResult:
    kwargs.setdefault("timeout", 30)
    return run_sandboxed(["sh", "-c", script], workspace=workspace, **kwargs)


def test_the_sandbox_can_be_created_here():
    # The suite needs bubblewrap; when this fails, its message names what is missing.
    assert sandbox_problem() is None, sandbox_problem()


def test_workspace_is_read_only_except_the_writable_paths(workspace: Path):
    result = sh(
        "echo a > docs/new.md; echo b > src/app.py; echo c > top.txt; echo d > .git/config; true",
        workspace,
        writable=["docs/"],
    )
    assert result.returncode == 0
    assert (workspace / "docs" / "new.md").read_text() == "a\n"
    assert (workspace / "src" / "app.py").read_text() == "print('hi')\n"
    assert not (workspace / "top.txt").exists()
    assert "Read-only file system" in result.output
    assert "[core]" in (workspace / ".git" / "config").read_text()


def test_a_missing_path_makes_its_nearest_parent_writable_but_never_git(workspace: Path):
    result = sh(
        "mkdir -p docs/a/b && echo x > docs/a/b/c.md && echo y > .git/HEAD",
        workspace,
        writable=["docs/a/b/c.md", ".git/"],
    )
    assert result.returncode != 0
    assert (workspace / "docs" / "a" / "b" / "c.md").read_text() == "x\n"
    assert (workspace / ".git" / "HEAD").read_text().startswith("ref:")


def test_the_whole_workspace_writable_still_keeps_git_read_only(workspace: Path):
    result = sh("echo evil > .git/hooks/pre-commit; echo ok > README.md", workspace, writable=["README.md"])
    assert (workspace / "README.md").read_text() == "ok\n"  # did not exist: its parent, the root, is writable
    assert not (workspace / ".git" / "hooks" / "pre-commit").exists()
    assert "Read-only file system" in result.output


def test_a_symlinked_writable_directory_is_never_followed(workspace: Path, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "docs").rmdir()
    (workspace / "docs").symlink_to(outside)
    result = sh("echo pwned > docs/x.md", workspace, writable=["docs/"])
    assert result.returncode != 0
    assert list(outside.iterdir()) == []


def test_no_credential_in_the_environment_or_any_visible_proc_environ(workspace: Path, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", CANARY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY)
    result = sh(
        "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; ls /proc | grep -c '^[0-9]'",
        workspace,
        env={"EXTRA": "1"},
    )
    assert CANARY not in result.output
    assert "EXTRA=1" in result.output and "HOME=/tmp/home" in result.output
    # A fresh /proc for the new PID namespace: the host's processes (this test's among them) are not there.
    assert int(result.output.strip().splitlines()[-1]) < 10
    assert f"{os.getpid()}" not in sh("ls /proc", workspace).output.split()


def test_no_network(workspace: Path):
    code = "import socket; socket.create_connection(('127.0.0.1', 5432), timeout=3); print('connected')"
    result = run_sandboxed([sys.executable, "-c", code], workspace=workspace, timeout=30)
    assert result.returncode != 0 and "connected" not in result.output


def test_host_files_outside_the_allowed_mounts_are_invisible(workspace: Path, tmp_path: Path):
    secret = tmp_path / "home" / ".git-credentials"
    secret.parent.mkdir()
    secret.write_text(CANARY)
    result = sh(f"cat {secret}; ls {Path.home()}; cat /etc/shadow; echo tmp > /tmp/inside", workspace)
    assert CANARY not in result.output
    assert not Path("/tmp/inside").exists()


def test_a_background_survivor_dies_with_the_call(workspace: Path):
    started = time.monotonic()
    result = sh("(sleep 1; echo survived > docs/late.md) & echo started", workspace, writable=["docs/"])
    assert result.returncode == 0 and "started" in result.output
    assert time.monotonic() - started < 1
    time.sleep(1.5)
    assert not (workspace / "docs" / "late.md").exists()


def test_timeout_kills_the_whole_tree(workspace: Path):
    started = time.monotonic()
    result = sh(
        "(sleep 3; echo survived > docs/late.md) & sleep 60", workspace, writable=["docs/"], timeout=0.5
    )
    assert result.timed_out and result.returncode is None
    assert time.monotonic() - started < 5
    time.sleep(3)
    assert not (workspace / "docs" / "late.md").exists()


def test_output_is_capped_and_the_exit_code_kept(workspace: Path):
    result = sh("head -c 300000 /dev/zero | tr '\\0' x; exit 3", workspace, output_cap=1000)
    assert result.returncode == 3 and result.truncated and len(result.output) == 1000


def test_the_python_installation_is_usable(workspace: Path):
    result = run_sandboxed(
        [sys.executable, "-c", "import yaml, sys; print(sys.prefix)"], workspace=workspace, timeout=60
    )
    assert result.returncode == 0, result.output
    assert result.output.strip() == sys.prefix


def test_missing_bubblewrap_raises_naming_it_and_never_runs_unsandboxed(workspace: Path, monkeypatch):
    monkeypatch.setenv(sandbox.bwrap.BWRAP_ENV, str(workspace / "no-such-bwrap"))
    sandbox_problem.cache_clear()
    try:
        with pytest.raises(
            SandboxUnavailable, match=r"bubblewrap \(bwrap\) is not installed.*apt-get install bubblewrap"
        ):
            sh("echo ran > docs/ran.md", workspace, writable=["docs/"])
    finally:
        monkeypatch.undo()
        sandbox_problem.cache_clear()
    assert not (workspace / "docs" / "ran.md").exists()


def test_validate_warns_when_targets_have_a_test_command_and_no_sandbox(tmp_path: Path, monkeypatch):
    from click.testing import CliRunner
    from support import backlog_yaml, docs_task, make_project

    from leviathan_dagster.cli.main import cli

    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"))}
    project = make_project(
        tmp_path, {"tested": {"files": files, "test_command": ["pytest"]}, "untested": {"files": files}}
    )
    args = ["--config", str(project.config_path), "--home", str(project.home.root), "validate"]
    assert "no sandbox" not in CliRunner().invoke(cli, args).output
    monkeypatch.setenv(sandbox.bwrap.BWRAP_ENV, str(tmp_path / "no-such-bwrap"))
    sandbox_problem.cache_clear()
    try:
        result = CliRunner().invoke(cli, args)
    finally:
        monkeypatch.undo()
        sandbox_problem.cache_clear()
    assert result.exit_code == 0, result.output
    [warning] = [line for line in result.output.splitlines() if "no sandbox" in line]
    assert "bubblewrap (bwrap) is not installed" in warning and "attempts of tested will fail" in warning
    assert "untested" not in warning


def test_configured_read_only_paths_are_shown_even_under_tmp(workspace: Path, tmp_path: Path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "tool.txt").write_text("tool\n")
    monkeypatch.setenv(sandbox.bwrap.READ_ONLY_ENV, str(shared))
    result = sh(f"cat {shared}/tool.txt; echo x > {shared}/new.txt", workspace)
    assert "tool" in result.output and "Read-only file system" in result.output
    assert not (shared / "new.txt").exists()


def test_a_refused_proc_mount_runs_the_command_once_more_with_an_empty_proc(
    workspace: Path, tmp_path: Path, monkeypatch
):
    """No probe runs before the command: where the kernel refuses a new /proc (a container), bwrap's
    own failure makes the probe run, and the command, which never ran, is started once more with an
    empty /proc. Simulated by a bwrap that refuses ``--proc`` the way a masked /proc does."""
    real = subprocess.run(["sh", "-c", "command -v bwrap"], capture_output=True, text=True).stdout.strip()
    fake = tmp_path / "bwrap"
    # As the real one fails there: its child already started (reported on the status fd), then the
    # mount is refused, and no exit of the command is ever reported.
    fake.write_text(
        "#!/bin/sh\n"
        'status=""; proc=""; next=""\n'
        'for arg in "$@"; do\n'
        '  if [ -n "$next" ]; then status="$arg"; next=""; fi\n'
        '  [ "$arg" = "--json-status-fd" ] && next=1\n'
        '  [ "$arg" = "--proc" ] && proc=1\n'
        "done\n"
        'if [ -n "$proc" ]; then\n'
        '  [ -n "$status" ] && eval "echo \'{ \\"child-pid\\": 2 }\' >&$status"\n'
        '  echo "bwrap: Can\'t mount proc on /newroot/proc: Operation not permitted" >&2; exit 1\n'
        "fi\n"
        f'exec {real} "$@"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv(sandbox.bwrap.BWRAP_ENV, str(fake))
    monkeypatch.setattr(sandbox.bwrap, "_PROC_ARGS", list(sandbox.bwrap.PROC_MOUNT))
    sandbox_problem.cache_clear()
    try:
        result = sh("echo ran >> docs/ran.md; ls /proc | wc -l", workspace, writable=["docs/"])
    finally:
        monkeypatch.undo()
        sandbox_problem.cache_clear()
    assert result.returncode == 0, result.output
    assert result.output.split() == ["0"]  # an empty /proc
    assert (workspace / "docs" / "ran.md").read_text() == "ran\n"  # ran once: the refused try never did
