"""LocalForge against real git: a bare repository as the remote and a working clone pushing branches."""

from __future__ import annotations

import json
import multiprocessing
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from leviathan_dagster.core.errors import ConfigError, ConflictError, NotFoundError, TransientError
from leviathan_dagster.core.forge.local import LocalForge, browsable_pr_url, local_forge_pr_records_dir
from leviathan_dagster.core.git import commands as gitutil


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return gitutil.init_bare(tmp_path / "remote.git")


@pytest.fixture
def work(tmp_path: Path, remote: Path) -> Path:
    """A clone of ``remote`` with one commit on main."""
    work = tmp_path / "work"
    work.mkdir()
    gitutil.run_git(["init", "--quiet", "--initial-branch=main"], cwd=work)
    gitutil.run_git(["remote", "add", "origin", str(remote)], cwd=work)
    (work / "README.md").write_text("hello\n")
    gitutil.commit_all(work, "initial")
    gitutil.push(work, "origin", "main")
    return work


@pytest.fixture
def forge(tmp_path: Path, remote: Path, work: Path) -> LocalForge:
    return LocalForge("demo", str(remote), tmp_path / "home")


def push_branch(work: Path, branch: str, files: dict[str, str], base: str = "main") -> str:
    """Commit ``files`` on a new ``branch`` started at ``base`` and push it; return the commit sha."""
    gitutil.run_git(["checkout", "--quiet", "-B", branch, f"origin/{base}"], cwd=work)
    for name, text in files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    sha = gitutil.commit_all(work, f"change on {branch}")
    gitutil.push(work, "origin", f"{branch}:refs/heads/{branch}")
    gitutil.run_git(["fetch", "--quiet", "origin"], cwd=work)
    return sha


def test_open_pull_request_records_fields(forge: LocalForge, work: Path, tmp_path: Path) -> None:
    push_branch(work, "agent/t1-a1", {"docs/t1.md": "# t1\n"})

    pr = forge.open_pull_request(head="agent/t1-a1", base="main", title="Task t1", body="body")

    assert (pr.number, pr.state, pr.head, pr.base, pr.title, pr.body) == (
        1,
        "open",
        "agent/t1-a1",
        "main",
        "Task t1",
        "body",
    )
    record = local_forge_pr_records_dir(tmp_path / "home", "demo") / "000001.json"
    # The PR's URL is its record's, one a browser or a terminal opens.
    assert pr.url == record.absolute().as_uri() and pr.url.startswith("file:///")
    assert pr.target_id == "demo"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", pr.created_at)
    assert json.loads(record.read_text())["head"] == "agent/t1-a1"
    assert forge.list_pull_requests("open") == [pr]
    assert forge.open_agent_pull_requests() == [pr]
    assert forge.get_pull_request(1) == pr
    assert forge.clone_url() == str(tmp_path / "remote.git")


def test_browsable_pr_url_for_every_forge_and_for_older_logs(
    forge: LocalForge, work: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    github = "https://github.com/acme/service/pull/7"
    assert browsable_pr_url(github, home, "demo", 7) == github
    # A log from before local PRs had a file URL: the record it names, once it exists, else nothing.
    assert browsable_pr_url("local://demo/pull/1", home, "demo", 1) is None
    push_branch(work, "agent/t1-a1", {"docs/t1.md": "# t1\n"})
    pr = forge.open_pull_request(head="agent/t1-a1", base="main", title="Task t1", body="body")
    assert browsable_pr_url("local://demo/pull/1", home, "demo", 1) == pr.url
    # A worker whose home was mounted at another path (a pod): the orchestrator's copy of the record.
    assert browsable_pr_url("file:///elsewhere/forge/demo/pulls/000001.json", home, "demo", 1) == pr.url
    assert json.loads(Path(pr.url.removeprefix("file://")).read_text())["number"] == 1


def test_open_requires_pushed_head(forge: LocalForge) -> None:
    with pytest.raises(NotFoundError, match="head branch 'agent/missing' does not exist"):
        forge.open_pull_request(head="agent/missing", base="main", title="t", body="")
    assert forge.list_pull_requests("all") == []


def test_merge_really_merges_into_base(forge: LocalForge, work: Path, remote: Path) -> None:
    head_sha = push_branch(work, "agent/t1-a1", {"docs/t1.md": "# t1\n"})
    pr = forge.open_pull_request(head="agent/t1-a1", base="main", title="Task t1", body="")

    merged = forge.merge_pull_request(pr.number)

    assert merged.state == "merged"
    assert merged.merged_at is not None and merged.merged_at.endswith("Z")
    assert merged.merge_commit_sha == gitutil.rev_parse(remote, "refs/heads/main")
    assert gitutil.show_file(str(remote), "main", "docs/t1.md") == "# t1\n"
    parents = gitutil.run_git(["rev-list", "--parents", "-n", "1", "main"], cwd=remote).split()[1:]
    assert parents[1] == head_sha  # a real --no-ff merge commit: second parent is the head
    message = gitutil.run_git(["log", "-1", "--format=%B", "main"], cwd=remote)
    assert message.startswith("Merge pull request #1 from agent/t1-a1\n\nTask t1")
    assert forge.list_pull_requests("open") == []
    assert forge.list_pull_requests("merged") == [merged]


def test_close_and_merge_of_closed_conflicts(forge: LocalForge, work: Path, remote: Path) -> None:
    push_branch(work, "agent/t2-a1", {"docs/t2.md": "# t2\n"})
    pr = forge.open_pull_request(head="agent/t2-a1", base="main", title="t2", body="")
    main_before = gitutil.rev_parse(remote, "refs/heads/main")

    closed = forge.close_pull_request(pr.number)

    assert closed.state == "closed" and closed.closed_at is not None
    with pytest.raises(ConflictError, match="cannot merge pull request #1: it is closed"):
        forge.merge_pull_request(pr.number)
    with pytest.raises(ConflictError, match="it is closed"):
        forge.close_pull_request(pr.number)
    assert gitutil.rev_parse(remote, "refs/heads/main") == main_before
    assert forge.list_pull_requests("closed") == [closed]
    # A closed PR no longer blocks a new one for the same head.
    assert forge.open_pull_request(head="agent/t2-a1", base="main", title="t2", body="").number == 2


def test_conflicting_merge_leaves_pr_open(forge: LocalForge, work: Path, remote: Path) -> None:
    push_branch(work, "agent/a-a1", {"README.md": "from a\n"})
    push_branch(work, "agent/b-a1", {"README.md": "from b\n"})
    first = forge.open_pull_request(head="agent/a-a1", base="main", title="a", body="")
    second = forge.open_pull_request(head="agent/b-a1", base="main", title="b", body="")
    forge.merge_pull_request(first.number)
    main_after_first = gitutil.rev_parse(remote, "refs/heads/main")

    with pytest.raises(ConflictError, match=r"merge conflicts in: README\.md"):
        forge.merge_pull_request(second.number)

    assert forge.get_pull_request(second.number).state == "open"
    assert gitutil.rev_parse(remote, "refs/heads/main") == main_after_first


def test_unknown_number_not_found(forge: LocalForge) -> None:
    with pytest.raises(NotFoundError, match=r"target 'demo' has no pull request #42"):
        forge.get_pull_request(42)
    with pytest.raises(NotFoundError):
        forge.merge_pull_request(42)
    with pytest.raises(NotFoundError):
        forge.close_pull_request(42)


def test_records_persist_across_instances(forge: LocalForge, work: Path, tmp_path: Path) -> None:
    push_branch(work, "agent/t1-a1", {"docs/t1.md": "# t1\n"})
    push_branch(work, "agent/t2-a1", {"docs/t2.md": "# t2\n"})
    forge.open_pull_request(head="agent/t1-a1", base="main", title="t1", body="")
    forge.close_pull_request(1)

    again = LocalForge("demo", f"file://{tmp_path / 'remote.git'}", tmp_path / "home")

    assert [(pr.number, pr.state) for pr in again.list_pull_requests("all")] == [(1, "closed")]
    assert again.open_pull_request(head="agent/t2-a1", base="main", title="t2", body="").number == 2


def test_push_refused_by_non_bare_repository_is_explained(tmp_path: Path, work: Path) -> None:
    push_branch(work, "agent/t1-a1", {"docs/t1.md": "# t1\n"})
    gitutil.run_git(["checkout", "--quiet", "main"], cwd=work)
    forge = LocalForge("demo", str(work), tmp_path / "home")
    forge.open_pull_request(head="agent/t1-a1", base="main", title="t1", body="")

    with pytest.raises(ConfigError, match="must be bare"):
        forge.merge_pull_request(1)
    assert forge.get_pull_request(1).state == "open"


def test_invalid_state_and_network_url_rejected(forge: LocalForge, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="state 'draft' is unknown"):
        forge.list_pull_requests("draft")
    with pytest.raises(ConfigError, match="repository path or file:// URL"):
        LocalForge("demo", "https://example.com/repo.git", tmp_path / "home")


def _open_in_process(remote: str, home: str, head: str, barrier: Any, results: Any) -> None:
    forge = LocalForge("demo", remote, Path(home))
    barrier.wait()
    results.put(forge.open_pull_request(head=head, base="main", title=head, body="").number)


def test_concurrent_processes_get_distinct_numbers(remote: Path, work: Path, tmp_path: Path) -> None:
    heads = [f"agent/t{i}-a1" for i in range(4)]
    for head in heads:
        push_branch(work, head, {f"docs/{head.split('/')[1]}.md": "x\n"})
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(len(heads)), ctx.Queue()
    home = str(tmp_path / "home")
    processes = [
        ctx.Process(target=_open_in_process, args=(str(remote), home, head, barrier, results))
        for head in heads
    ]
    for process in processes:
        process.start()
    numbers = sorted(results.get(timeout=60) for _ in heads)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    assert numbers == [1, 2, 3, 4]
    forge = LocalForge("demo", str(remote), Path(home))
    assert sorted(pr.head for pr in forge.list_pull_requests("open")) == sorted(heads)
    results.close()
    results.join_thread()


# -- gitutil, the forge's git layer --------------------------------------------------------------------


def test_git_errors_are_transient_and_name_the_command(tmp_path: Path) -> None:
    with pytest.raises(
        TransientError, match=r"`git -c core.quotepath=off rev-parse --verify nope\^\{commit\}`"
    ):
        gitutil.rev_parse(tmp_path, "nope")


def test_commits_use_the_fixed_identity(work: Path) -> None:
    assert gitutil.run_git(["log", "-1", "--format=%an <%ae> / %cn <%ce>"], cwd=work).strip() == (
        "Leviathan <leviathan@localhost> / Leviathan <leviathan@localhost>"
    )
    assert gitutil.current_branch(work) == "main"
    with pytest.raises(gitutil.NothingToCommitError):
        gitutil.commit_all(work, "empty")


def test_show_file_through_a_fetched_mirror(
    work: Path, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"file://{remote}"
    # file:// URLs are read in place; pretend this one is a network URL to exercise the mirror.
    monkeypatch.setattr(gitutil, "local_path", lambda _url: None)
    cache = tmp_path / "cache"
    assert gitutil.show_file(url, "main", "README.md", cache_dir=cache) == "hello\n"

    (work / "README.md").write_text("updated\n")
    gitutil.commit_all(work, "update")
    gitutil.push(work, "origin", "main")

    assert gitutil.show_file(url, "main", "README.md", cache_dir=cache) == "updated\n"
    assert gitutil.show_file(url, "main", "missing.txt", cache_dir=cache) is None
    with pytest.raises(NotFoundError, match="ref 'nope' does not exist"):
        gitutil.show_file(url, "nope", "README.md", cache_dir=cache)
    assert len(list(cache.glob("*.git"))) == 1


def _opened(forge: LocalForge, work: Path, count: int) -> list[int]:
    numbers = []
    for i in range(count):
        push_branch(work, f"agent/t{i}-a1", {f"docs/t{i}.md": f"# {i}\n"})
        numbers.append(forge.open_pull_request(head=f"agent/t{i}-a1", base="main", title="t", body="").number)
    return numbers


def test_listing_open_pull_requests_reads_only_the_open_ones(
    forge: LocalForge, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    numbers = _opened(forge, work, 6)
    for number in numbers[:5]:
        forge.close_pull_request(number)
    reads: list[Path] = []
    real = LocalForge._read
    monkeypatch.setattr(LocalForge, "_read", lambda self, path: reads.append(path) or real(self, path))
    assert [pr.number for pr in forge.list_pull_requests("open")] == [6]
    assert [p.name for p in reads] == ["000006.json"]
    assert len(forge.list_pull_requests("closed")) == 5


def test_a_home_from_before_the_open_index_gets_it_built(
    forge: LocalForge, work: Path, tmp_path: Path
) -> None:
    _opened(forge, work, 3)
    forge.merge_pull_request(2)
    shutil.rmtree(tmp_path / "home" / "forge" / "demo" / "open")  # as written by an older Leviathan
    assert [pr.number for pr in forge.list_pull_requests("open")] == [1, 3]
    fresh = LocalForge("demo", forge.repo_url, tmp_path / "home")
    assert [pr.number for pr in fresh.list_pull_requests("open")] == [1, 3]
    with pytest.raises(ConflictError, match="#1 is already open"):
        fresh.open_pull_request(head="agent/t0-a1", base="main", title="t", body="")
    push_branch(work, "agent/new-a1", {"docs/new.md": "new\n"})
    assert fresh.open_pull_request(head="agent/new-a1", base="main", title="t", body="").number == 4


def test_a_crash_leaves_a_marker_too_many_never_one_too_few(
    forge: LocalForge, work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (first,) = _opened(forge, work, 1)
    monkeypatch.setattr(LocalForge, "_unmark_open", lambda self, number: None)  # crash after the write
    forge.close_pull_request(first)
    monkeypatch.undo()
    assert forge.list_pull_requests("open") == []  # the stale marker's record says closed
    push_branch(work, "agent/x-a1", {"docs/x.md": "x\n"})

    def crash(self, pr):
        raise OSError("disk full")

    monkeypatch.setattr(LocalForge, "_write", crash)  # crash after the marker, before the record
    with pytest.raises(OSError):
        forge.open_pull_request(head="agent/x-a1", base="main", title="t", body="")
    monkeypatch.undo()
    assert forge.list_pull_requests("open") == []
    assert forge.open_pull_request(head="agent/x-a1", base="main", title="t", body="").number == 2
    assert [pr.number for pr in forge.list_pull_requests("open")] == [2]
