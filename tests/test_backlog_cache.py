"""A backlog is parsed once per version (git blob id); a mirror is fetched only when its branch moved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import backlog_yaml, docs_task

from leviathan_dagster.core.backlog import cache as backlog_cache
from leviathan_dagster.core.backlog import document as backlog
from leviathan_dagster.core.errors import BacklogError
from leviathan_dagster.core.git import commands as gitutil
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import BACKLOG_PATH, TargetConfig
from leviathan_dagster.core.scheduling.cycle import read_backlog


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    gitutil.run_git(["init", "--quiet", "--initial-branch=main"], cwd=work)
    return work


def commit_backlog(repo: Path, text: str) -> None:
    (repo / BACKLOG_PATH).parent.mkdir(exist_ok=True)
    (repo / BACKLOG_PATH).write_text(text, encoding="utf-8")
    gitutil.commit_all(repo, "backlog")


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every real parse, by source; the in-memory cache starts empty."""
    backlog_cache.clear_memory()
    seen: list[str] = []
    real = backlog.parse_backlog

    def counting(text: str, source: str = BACKLOG_PATH):
        seen.append(source)
        return real(text, source)

    monkeypatch.setattr(backlog, "parse_backlog", counting)
    yield seen
    backlog_cache.clear_memory()


def test_unchanged_backlog_is_parsed_once_in_memory_and_on_disk(
    repo: Path, tmp_path: Path, parses: list[str]
) -> None:
    commit_backlog(repo, backlog_yaml(docs_task("a"), docs_task("b", dependencies=["a"])))
    target, home = TargetConfig("t", str(repo)), LeviathanHome(tmp_path / "home")
    first = read_backlog(target, home).backlog
    assert read_backlog(target, home).backlog == first
    assert parses == ["t:.leviathan/backlog.yaml"]

    backlog_cache.clear_memory()  # a new process: the disk cache answers
    again = read_backlog(target, home).backlog
    assert again == first and [t.id for t in again.tasks] == ["a", "b"]
    assert isinstance(again.tasks[1].dependencies, tuple)
    assert len(parses) == 1
    assert list(home.backlog_cache.glob(f"{backlog_cache.parser_fingerprint()}/*.json"))

    commit_backlog(repo, backlog_yaml(docs_task("a"), docs_task("c")))
    assert [t.id for t in read_backlog(target, home).backlog.tasks] == ["a", "c"]
    assert len(parses) == 2


def test_a_broken_backlog_reports_the_same_problems_from_the_cache(
    repo: Path, tmp_path: Path, parses: list[str]
) -> None:
    commit_backlog(repo, "tasks:\n  - id: a\n    title: A\n")
    target, home = TargetConfig("t", str(repo)), LeviathanHome(tmp_path / "home")
    first = read_backlog(target, home).error
    assert "allowed_paths" in first
    backlog_cache.clear_memory()
    assert read_backlog(target, home).error == first
    assert read_backlog(target, home).error == first
    assert len(parses) == 1


def test_an_unreadable_cache_file_is_a_miss(repo: Path, tmp_path: Path, parses: list[str]) -> None:
    commit_backlog(repo, backlog_yaml(docs_task("a")))
    target, home = TargetConfig("t", str(repo)), LeviathanHome(tmp_path / "home")
    expected = read_backlog(target, home).backlog
    (cached,) = home.backlog_cache.glob("*/*.json")
    for damage in ("{not json", json.dumps({"blob": "other", "source": "t:x"}), '{"tasks": 3}'):
        cached.write_text(damage)
        backlog_cache.clear_memory()
        assert read_backlog(target, home).backlog == expected
    assert len(parses) == 4
    assert json.loads(cached.read_text())["tasks"][0]["id"] == "a"  # rewritten


def test_values_json_would_change_stay_in_memory_only(tmp_path: Path, parses: list[str]) -> None:
    text = backlog_yaml(docs_task("a", due="2024-05-01")).replace("'2024-05-01'", "2024-05-01")
    parsed = backlog_cache.parse_backlog_cached("blob1", "t:x", lambda: text, cache_dir=tmp_path)
    assert str(parsed.tasks[0].extra["due"]) == "2024-05-01"
    assert not list(tmp_path.glob("*/*.json"))
    with pytest.raises(BacklogError):
        backlog_cache.parse_backlog_cached("blob2", "t:x", lambda: "tasks: 3\n", cache_dir=tmp_path)


def test_a_network_mirror_is_fetched_only_when_the_branch_moved(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = gitutil.init_bare(tmp_path / "remote.git")
    gitutil.run_git(["remote", "add", "origin", str(remote)], cwd=repo)
    commit_backlog(repo, backlog_yaml(docs_task("a")))
    gitutil.push(repo, "origin", "main")
    url, cache = f"file://{remote}", tmp_path / "mirrors"
    monkeypatch.setattr(gitutil, "local_path", lambda _url: None)  # read it as if it were remote
    calls: list[str] = []
    real = gitutil.run_git

    def spy(args, **kwargs):
        calls.append(next(a for a in args if not a.startswith("-")))
        return real(args, **kwargs)

    monkeypatch.setattr(gitutil, "run_git", spy)
    assert gitutil.show_file(url, "main", BACKLOG_PATH, cache_dir=cache).startswith("tasks:")
    assert "clone" in calls
    calls.clear()
    gitutil.find_blob(url, "main", BACKLOG_PATH, cache_dir=cache)
    assert "ls-remote" in calls and "fetch" not in calls

    commit_backlog(repo, backlog_yaml(docs_task("b")))
    gitutil.push(repo, "origin", "main")
    calls.clear()
    assert "id: b" in gitutil.show_file(url, "main", BACKLOG_PATH, cache_dir=cache)
    assert "fetch" in calls


def test_the_collector_is_paused_only_inside_the_block() -> None:
    import gc

    from leviathan_dagster.core.gc_pause import collector_paused

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block does not turn it back on early
    assert gc.isenabled()
