"""The contract every Forge backend passes, whatever it stores pull requests in.

Each case drives a backend only through the ``Forge`` interface and git (the way the worker, the
scheduler, the PR sensor and the CLI use it) and asserts what any caller can observe. A backend's test
class subclasses ``ForgeContract`` (no ``Test`` prefix: collected only through subclasses) and fills in
the ``backend`` fixture with a ``ForgeBackend``: the forge, the target it serves, and the two things
the interface cannot do by itself (say what listing cost, and break the backend's service).

Deliberately outside the contract (each backend's own test module covers them): merging a draft
(GitHub refuses it until a person marks it ready; the local forge has no such button and merges it),
``draft_until_green`` promotion on green checks (only GitHub has checks), rate limits and retries,
credentials (tokens, App installation tokens, renewal), and the local forge's lock and crash safety.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from support import backlog_yaml, docs_task

from leviathan_dagster.core.attempts.markers import render_task_marker
from leviathan_dagster.core.errors import ConflictError, LeviathanError, NotFoundError
from leviathan_dagster.core.forge.base import Forge
from leviathan_dagster.core.forge.registry import forge_for
from leviathan_dagster.core.git import commands as gitutil
from leviathan_dagster.core.home import LeviathanHome
from leviathan_dagster.core.models import PullRequest, TargetConfig
from leviathan_dagster.core.scheduling.cycle import read_backlog

TARGET_ID = "site"
BACKLOG_PATH = ".leviathan/backlog.yaml"
BASE_BACKLOG = backlog_yaml(docs_task("intro"))
# What every backend's repository holds on main when a case starts.
INITIAL_FILES = {"README.md": "# site\n", BACKLOG_PATH: BASE_BACKLOG}
# Who may be asked for review on every backend: a user and an org/team (the backlog's ``owner``).
REVIEWER_USER, REVIEWER_TEAM = "alice", "acme/docs"


class ForgeBackend(ABC):
    """One backend under test: its forge and the target it serves, set up with ``INITIAL_FILES``."""

    forge: Forge
    target: TargetConfig
    environ: Mapping[str, str]
    home: LeviathanHome

    @abstractmethod
    def listing_cost(self) -> int:
        """A counter of the work done so far to list pull requests (records read, requests sent)."""

    @abstractmethod
    def break_service(self) -> None:
        """Make the backend's storage or service fail every further call."""


def body_for(task_id: str, text: str = "Work") -> str:
    return f"{text} on {task_id}\n\n{render_task_marker(TARGET_ID, task_id)}\n"


class ForgeContract:
    # -- hooks -------------------------------------------------------------------------------------

    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[ForgeBackend]:
        raise NotImplementedError

    # -- helpers (only the interface and git) ------------------------------------------------------

    @pytest.fixture
    def push(self, backend: ForgeBackend, tmp_path: Path):
        """``push(branch, files, base="main")``: commit ``files`` on ``branch`` started at ``base`` in a
        clone of ``clone_url()`` and push it as the worker does (credential per git command)."""
        work = tmp_path / "contract-work"
        forge = backend.forge

        def push(branch: str, files: Mapping[str, str], base: str = "main") -> str:
            if not work.exists():
                gitutil.clone(forge.clone_url(), work, base, env=forge.git_auth_env())
            gitutil.run_git(["fetch", "-q", "origin"], cwd=work, env=forge.git_auth_env())
            gitutil.run_git(["checkout", "-q", "-B", branch, f"origin/{base}"], cwd=work)
            for name, text in files.items():
                (work / name).parent.mkdir(parents=True, exist_ok=True)
                (work / name).write_text(text, encoding="utf-8")
            sha = gitutil.commit_all(work, f"change on {branch}")
            gitutil.push(work, forge.clone_url(), f"HEAD:refs/heads/{branch}", env=forge.git_auth_env())
            return sha

        return push

    def open_for(self, forge: Forge, push, task_id: str, **options) -> PullRequest:
        head = options.pop("head", f"agent/{task_id}-{TARGET_ID}-{task_id}-1")
        push(head, {f"docs/{task_id}.md": f"# {task_id}\n"})
        return forge.open_pull_request(
            head=head, base="main", title=f"[leviathan] {task_id}", body=body_for(task_id), **options
        )

    # -- the backlog at a branch ---------------------------------------------------------------------

    def test_the_backlog_is_read_at_the_base_branch(self, backend: ForgeBackend, push, monkeypatch) -> None:
        for name, value in backend.environ.items():
            monkeypatch.setenv(name, value)
        assert type(forge_for(backend.target, backend.home)) is type(backend.forge)
        push("agent/intro-x", {BACKLOG_PATH: "tasks: []\n"})  # an attempt branch never counts
        snapshot = read_backlog(backend.target, backend.home)
        assert snapshot.error is None, snapshot.error
        assert [task.id for task in snapshot.backlog.tasks] == ["intro"]
        push("main", {BACKLOG_PATH: backlog_yaml(docs_task("outro"))})  # what humans merged next
        assert [task.id for task in read_backlog(backend.target, backend.home).backlog.tasks] == ["outro"]

    # -- opening -------------------------------------------------------------------------------------

    def test_open_returns_the_pull_request_as_stored(self, backend: ForgeBackend, push) -> None:
        forge = backend.forge
        pr = self.open_for(forge, push, "a", head="agent/a-1")
        assert (pr.target_id, pr.number, pr.state, pr.head, pr.base, pr.draft) == (
            TARGET_ID,
            1,
            "open",
            "agent/a-1",
            "main",
            False,
        )
        assert (pr.title, pr.body, pr.task_marker()) == ("[leviathan] a", body_for("a"), f"{TARGET_ID}/a")
        # GitHub's page (.../pull/1) or the local forge's record (file://.../000001.json).
        assert pr.created_at.endswith("Z") and pr.url.rsplit("/", 1)[-1].split(".")[0].lstrip("0") == "1"
        assert (pr.merged_at, pr.closed_at, pr.merge_commit_sha) == (None, None, None)
        assert forge.get_pull_request(1) == pr
        assert forge.list_pull_requests("open") == [pr]
        assert forge.list_pull_requests("all") == [pr]

    def test_draft_and_reviewers_are_kept(self, backend: ForgeBackend, push) -> None:
        pr = self.open_for(
            backend.forge, push, "a", draft=True, reviewers=[REVIEWER_USER, REVIEWER_TEAM, REVIEWER_USER]
        )
        assert pr.draft is True
        assert pr.reviewers == (REVIEWER_USER, REVIEWER_TEAM)
        assert backend.forge.get_pull_request(pr.number) == pr

    def test_reopening_the_same_attempt_adopts_its_open_pull_request(
        self, backend: ForgeBackend, push
    ) -> None:
        # A worker whose open was performed but whose answer was lost tries again: one PR, the same.
        forge = backend.forge
        first = self.open_for(forge, push, "a", head="agent/a-1")
        again = forge.open_pull_request(
            head="agent/a-1", base="main", title="[leviathan] a", body=body_for("a")
        )
        assert again == first
        assert [pr.number for pr in forge.list_pull_requests("all")] == [1]

    def test_a_second_open_pull_request_for_a_head_conflicts(self, backend: ForgeBackend, push) -> None:
        forge = backend.forge
        self.open_for(forge, push, "a", head="agent/a-1")
        for body in (body_for("b"), "no marker at all"):
            with pytest.raises(ConflictError, match="already open for 'agent/a-1'"):
                forge.open_pull_request(head="agent/a-1", base="main", title="other", body=body)
        push("agent/plain", {"docs/plain.md": "plain\n"})
        forge.open_pull_request(head="agent/plain", base="main", title="plain", body="no marker")
        with pytest.raises(ConflictError, match="already open for 'agent/plain'"):
            forge.open_pull_request(head="agent/plain", base="main", title="plain", body="no marker")
        assert [pr.number for pr in forge.list_pull_requests("all")] == [1, 2]

    def test_a_second_pull_request_for_one_task_is_refused(self, backend: ForgeBackend, push) -> None:
        forge = backend.forge
        first = self.open_for(forge, push, "a", head="agent/a-attempt-1")
        with pytest.raises(ConflictError, match=f"#{first.number}.*already open for task {TARGET_ID}/a"):
            self.open_for(forge, push, "a", head="agent/a-attempt-2")
        assert [pr.head for pr in forge.list_pull_requests("all")] == ["agent/a-attempt-1"]
        forge.close_pull_request(first.number)  # a closed PR no longer blocks the task's next attempt
        again = forge.open_pull_request(head="agent/a-attempt-2", base="main", title="a", body=body_for("a"))
        assert again.number == 2

    def test_open_needs_pushed_branches(self, backend: ForgeBackend, push) -> None:
        forge = backend.forge
        with pytest.raises(NotFoundError, match="head"):
            forge.open_pull_request(head="agent/never-pushed", base="main", title="t", body=body_for("a"))
        push("agent/a-1", {"docs/a.md": "a\n"})
        with pytest.raises(NotFoundError, match="base"):
            forge.open_pull_request(head="agent/a-1", base="nope", title="t", body=body_for("a"))
        with pytest.raises(ConflictError):
            forge.open_pull_request(head="main", base="main", title="t", body=body_for("a"))
        assert forge.list_pull_requests("all") == []

    # -- reading -------------------------------------------------------------------------------------

    def test_listing_filters_by_state_in_number_order(self, backend: ForgeBackend, push) -> None:
        forge = backend.forge
        opened = [self.open_for(forge, push, task) for task in ("a", "b", "c", "d")]
        forge.merge_pull_request(opened[0].number)
        forge.close_pull_request(opened[2].number)
        push("feature/human", {"docs/human.md": "by hand\n"})
        human = forge.open_pull_request(head="feature/human", base="main", title="human", body="")

        def numbers(state: str) -> list[int]:
            return [pr.number for pr in forge.list_pull_requests(state)]

        assert (numbers("open"), numbers("merged"), numbers("closed")) == ([2, 4, 5], [1], [3])
        assert numbers("all") == [1, 2, 3, 4, 5]
        assert [pr.number for pr in forge.open_agent_pull_requests()] == [2, 4]
        assert human.number not in [pr.number for pr in forge.open_agent_pull_requests()]
        with pytest.raises(ValueError, match="state 'draft' is unknown"):
            forge.list_pull_requests("draft")

    def test_listing_open_costs_what_is_open(self, backend: ForgeBackend, push) -> None:
        # The scheduler lists every target's open PRs on every tick, for years: what was closed long
        # ago must not make that slower.
        forge = backend.forge
        self.open_for(forge, push, "keep")

        def cost_of_listing_open() -> int:
            before = backend.listing_cost()
            assert [pr.task_marker() for pr in forge.list_pull_requests("open")] == [f"{TARGET_ID}/keep"]
            return backend.listing_cost() - before

        few = cost_of_listing_open()
        for i in range(4):
            forge.close_pull_request(self.open_for(forge, push, f"old{i}").number)
        assert cost_of_listing_open() == few

    def test_an_attempt_pull_request_is_found_by_head_and_marker(self, backend: ForgeBackend, push) -> None:
        # How reconciliation finds the PR of a worker that died after opening it (attempt_recovery).
        forge = backend.forge
        self.open_for(forge, push, "a", head="agent/a-1")
        closed = self.open_for(forge, push, "b", head="agent/b-1")
        forge.close_pull_request(closed.number)
        found = {(pr.head, pr.task_marker()): pr.state for pr in forge.list_pull_requests("all")}
        assert found == {("agent/a-1", f"{TARGET_ID}/a"): "open", ("agent/b-1", f"{TARGET_ID}/b"): "closed"}

    def test_unknown_numbers_are_not_found(self, backend: ForgeBackend) -> None:
        for call in (
            backend.forge.get_pull_request,
            backend.forge.merge_pull_request,
            backend.forge.close_pull_request,
        ):
            with pytest.raises(NotFoundError):
                call(42)

    # -- state transitions ---------------------------------------------------------------------------

    def test_merge_really_merges_and_is_final(self, backend: ForgeBackend, push, tmp_path) -> None:
        forge = backend.forge
        pr = self.open_for(forge, push, "a")
        merged = forge.merge_pull_request(pr.number)
        assert (merged.number, merged.state, merged.head) == (pr.number, "merged", pr.head)
        assert merged.merged_at and merged.merged_at.endswith("Z")
        assert merged.merge_commit_sha and len(merged.merge_commit_sha) == 40
        assert forge.get_pull_request(pr.number) == merged
        merged_main = gitutil.show_file(
            forge.clone_url(), "main", "docs/a.md", cache_dir=tmp_path / "mirrors", env=forge.git_auth_env()
        )
        assert merged_main == "# a\n"
        for call in (forge.merge_pull_request, forge.close_pull_request):
            with pytest.raises(ConflictError, match="it is merged"):
                call(pr.number)
        assert forge.get_pull_request(pr.number) == merged

    def test_close_is_final_and_merges_nothing(self, backend: ForgeBackend, push, tmp_path) -> None:
        forge = backend.forge
        pr = self.open_for(forge, push, "a")
        closed = forge.close_pull_request(pr.number)
        assert (closed.state, closed.merged_at, closed.merge_commit_sha) == ("closed", None, None)
        assert closed.closed_at and closed.closed_at.endswith("Z")
        for call in (forge.merge_pull_request, forge.close_pull_request):
            with pytest.raises(ConflictError, match="it is closed"):
                call(pr.number)
        assert forge.get_pull_request(pr.number) == closed
        on_main = gitutil.show_file(
            forge.clone_url(), "main", "docs/a.md", cache_dir=tmp_path / "mirrors", env=forge.git_auth_env()
        )
        assert on_main is None

    def test_a_conflicting_merge_leaves_the_pull_request_open(self, backend: ForgeBackend, push) -> None:
        forge = backend.forge
        push("agent/x-1", {"README.md": "from x\n"})
        push("agent/y-1", {"README.md": "from y\n"})
        first = forge.open_pull_request(head="agent/x-1", base="main", title="x", body=body_for("x"))
        second = forge.open_pull_request(head="agent/y-1", base="main", title="y", body=body_for("y"))
        forge.merge_pull_request(first.number)
        with pytest.raises(ConflictError):
            forge.merge_pull_request(second.number)
        assert forge.get_pull_request(second.number).state == "open"

    def test_a_draft_without_green_checks_is_never_promoted(self, backend: ForgeBackend, push) -> None:
        pr = self.open_for(backend.forge, push, "a", draft=True)
        assert backend.forge.ready_green_drafts() == []
        assert backend.forge.get_pull_request(pr.number).draft is True

    def test_the_diff_is_what_the_pull_request_proposed(self, backend: ForgeBackend, push, tmp_path) -> None:
        forge = backend.forge
        pr = self.open_for(forge, push, "a")
        push("agent/later", {"docs/later.md": "later\n"})
        forge.open_pull_request(head="agent/later", base="main", title="later", body="")
        forge.merge_pull_request(2)  # main moves on: the diff stays the PR's own
        stat = forge.pull_request_diff(pr, cache_dir=tmp_path / "diff-mirrors", patch=False)
        assert "docs/a.md" in stat and "+# a" not in stat and "later" not in stat
        proposed = forge.pull_request_diff(pr, cache_dir=tmp_path / "diff-mirrors")
        assert "docs/a.md" in proposed and "+# a" in proposed and "later" not in proposed
        merged = forge.merge_pull_request(pr.number)  # after the merge it still shows what it proposed
        assert forge.pull_request_diff(merged, cache_dir=tmp_path / "diff-mirrors") == proposed

    # -- pushes and errors ---------------------------------------------------------------------------

    def test_a_transient_push_failure_is_neither_final_nor_a_credential_to_renew(
        self, backend: ForgeBackend
    ) -> None:
        blip = "fatal: unable to access 'x': Could not resolve host: forge.example\n"
        assert backend.forge.permanent_push_refusal(blip) is None
        assert backend.forge.renew_credentials_after(blip) is False

    def test_a_broken_service_fails_with_leviathans_errors(self, backend: ForgeBackend, push) -> None:
        forge = backend.forge
        pr = self.open_for(forge, push, "a")
        backend.break_service()
        # The calls that need the repository (a local forge lists its records without it).
        calls = {
            "open": lambda: forge.open_pull_request(
                head="agent/z", base="main", title="z", body=body_for("z")
            ),
            "merge": lambda: forge.merge_pull_request(pr.number),
        }
        for what, call in calls.items():
            with pytest.raises(LeviathanError) as raised:
                call()
            assert type(raised.value).__module__.startswith("leviathan_dagster."), what
