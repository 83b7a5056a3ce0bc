"""The reviewer's side of the CLI: ``prs show --stat|--patch`` shows what a PR changes, before and after
it is merged (read from git, the same for every forge)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import Project, backlog_yaml, docs_task, make_project, run_worker

from leviathan_dagster.cli.main import cli


def invoke(project: Project, *args: str):
    return CliRunner().invoke(
        cli,
        ["--config", str(project.config_path), "--home", str(project.home.root), *args],
        catch_exceptions=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Project:
    files = {".leviathan/backlog.yaml": backlog_yaml(docs_task("a"))}
    return make_project(tmp_path, {"site": {"files": files}})


def test_prs_show_stat_and_patch_open_and_merged(project: Project) -> None:
    assert run_worker(project, "site", "a", "attempt-1").returncode == 0
    plain = invoke(project, "prs", "show", "1").output
    assert "docs/a.md" not in plain.split("\n\n", 1)[0] and "diff --git" not in plain
    stat = invoke(project, "prs", "show", "1", "--stat").output
    assert "docs/a.md" in stat and "file" in stat and "changed" in stat and "diff --git" not in stat
    patch = invoke(project, "prs", "show", "1", "--patch")
    assert patch.exit_code == 0
    assert "diff --git a/docs/a.md b/docs/a.md" in patch.output and "+# Write a" in patch.output
    # The backlog write-back is part of the PR too: the reviewer sees it.
    assert ".leviathan/backlog.yaml" in patch.output
    assert invoke(project, "prs", "merge", "1").exit_code == 0
    after = json.loads(invoke(project, "prs", "show", "1", "--patch", "--json").stdout)
    assert after["state"] == "merged" and "diff --git a/docs/a.md b/docs/a.md" in after["diff"]
    # Only what the PR proposed: the merge commit itself adds nothing to the diff.
    assert after["diff"].count("diff --git") == patch.output.count("diff --git")


def test_init_writes_a_starter_config_that_validates_and_runs(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"svc": {"files": {"README.md": "# svc\n"}}})
    config = tmp_path / "new" / "leviathan.yaml"
    config.parent.mkdir()
    work = tmp_path / "svc-work"
    from leviathan_dagster.core.git import commands as gitutil

    gitutil.clone(str(project.root / "svc.git"), work)
    runner = CliRunner()
    args = ["--config", str(config), "--home", str(tmp_path / "home"), "init", str(work)]
    # Not a terminal: nothing written unasked, and the way to ask is named.
    first = runner.invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0 and not config.exists() and "--write-config" in first.output
    (work / ".leviathan" / "backlog.yaml").unlink()
    second = runner.invoke(cli, [*args, "--write-config"], catch_exceptions=False)
    assert second.exit_code == 0 and config.exists(), second.output
    text = config.read_text()
    assert "id: svc-work" in text and "branch: main" in text
    validated = runner.invoke(cli, ["--config", str(config), "--home", str(tmp_path / "home"), "validate"])
    assert "svc-work" in validated.output, validated.output
    # Never overwritten.
    (work / ".leviathan" / "backlog.yaml").unlink()
    third = runner.invoke(cli, [*args, "--write-config"])
    assert third.exit_code != 0 and "already exists" in third.output and config.read_text() == text
