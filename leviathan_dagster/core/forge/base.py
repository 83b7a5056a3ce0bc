"""The forge seam: one small interface, one class per backend (LocalForge, GithubForge)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from leviathan_dagster.core.errors import NotFoundError
from leviathan_dagster.core.git import commands as gitutil
from leviathan_dagster.core.models import AGENT_BRANCH_PREFIX, PullRequest


class Forge(ABC):
    """Pull requests of one target repository."""

    target_id: str

    @abstractmethod
    def clone_url(self) -> str:
        """URL/path that ``git clone`` and ``git push`` use for this target (no credentials inside)."""

    def git_auth_env(self) -> dict[str, str]:
        """Environment that authenticates one git command to ``clone_url()`` (never part of the URL)."""
        return {}

    def permanent_push_refusal(self, git_output: str) -> str | None:
        """Why the forge refused a push for good (with the forge's own message), from git's output;
        None when the refusal may pass on retry (the default: every push failure is transient)."""
        return None

    def renew_credentials_after(self, git_output: str) -> bool:
        """git was refused authentication (``git_output``): drop a credential that can be renewed and
        say so, so the caller tries once more; False (the default) when there is nothing to renew."""
        return False

    @abstractmethod
    def open_pull_request(
        self,
        *,
        head: str,
        base: str,
        title: str,
        body: str,
        reviewers: Sequence[str] = (),
        draft: bool = False,
    ) -> PullRequest:
        """Open a PR from an already pushed ``head`` branch, requesting review from ``reviewers``
        (logins or ``org/team``, each once); ``draft`` opens it as a draft (not ready for review).

        Idempotent for one attempt: a PR already open from ``head`` whose body carries the same task
        marker is returned as it is. ConflictError when another PR is open from ``head``, or one from
        another head carries this body's task marker (one open PR per task); NotFoundError when
        ``head`` or ``base`` is not a branch. Every backend passes ``tests/forge_contract.py``."""

    @abstractmethod
    def list_pull_requests(self, state: str = "open") -> list[PullRequest]:
        """PRs in ``state`` (open | merged | closed | all), ordered by number."""

    @abstractmethod
    def get_pull_request(self, number: int) -> PullRequest:
        """NotFoundError when there is no such PR."""

    @abstractmethod
    def merge_pull_request(self, number: int) -> PullRequest:
        """Really merge head into base. ConflictError when not open (merged or closed: "it is
        <state>") or not mergeable; the PR then stays as it was."""

    @abstractmethod
    def close_pull_request(self, number: int) -> PullRequest:
        """Close without merging. ConflictError when not open."""

    def ready_green_drafts(self) -> list[PullRequest]:
        """Mark draft agent PRs whose checks are green ready for review (forges without drafts: none)."""
        return []

    def open_agent_pull_requests(self) -> list[PullRequest]:
        """Open PRs whose head carries Leviathan's ``agent/`` prefix (the ``max_open_prs`` latch)."""
        return [pr for pr in self.list_pull_requests("open") if pr.head.startswith(AGENT_BRANCH_PREFIX)]

    def pull_request_diff(self, pr: PullRequest, *, cache_dir: Path, patch: bool = True) -> str:
        """What ``pr`` changes, as git shows it: ``--stat``, then the patch when ``patch``.

        Read from git, not from a forge API, so every backend shows the same thing: the diff from the
        fork point of head and base to head. After a merge the fork point is taken against the base
        as it was before the merge commit, and a deleted head branch is found under GitHub's
        ``refs/pull/N/head``, so merged and closed PRs still show what they proposed.
        """
        repo = gitutil.local_path(self.clone_url())
        if repo is None:
            repo = gitutil.fetch_mirror(self.clone_url(), cache_dir, self.git_auth_env())
        heads = (f"refs/heads/{pr.head}", f"refs/pull/{pr.number}/head")
        head = next((ref for ref in heads if gitutil.ref_exists(repo, ref)), None)
        if head is None:
            raise NotFoundError(
                f"target {self.target_id!r}: pull request #{pr.number}'s branch {pr.head!r} is gone from "
                f"{self.clone_url()}: no diff to show"
            )
        base = f"{pr.merge_commit_sha}^1" if pr.merge_commit_sha else f"refs/heads/{pr.base}"
        fork = gitutil.run_git(["merge-base", base, head], cwd=repo).strip()
        # --no-ext-diff/--no-textconv: the harness never runs a diff program the repository names.
        args = ["diff", "--no-ext-diff", "--no-textconv", "--stat", *(["--patch"] if patch else [])]
        return gitutil.run_git([*args, fork, head], cwd=repo)
