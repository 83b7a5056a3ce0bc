"""The forge seam: one small interface, one class per backend (LocalForge, GithubForge)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

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
        """Open a PR from an already pushed ``head`` branch, requesting review from ``reviewers``;
        ``draft`` opens it as a draft (not ready for review). ConflictError if one is open for ``head``."""

    @abstractmethod
    def list_pull_requests(self, state: str = "open") -> list[PullRequest]:
        """PRs in ``state`` (open | merged | closed | all), ordered by number."""

    @abstractmethod
    def get_pull_request(self, number: int) -> PullRequest:
        """NotFoundError when there is no such PR."""

    @abstractmethod
    def merge_pull_request(self, number: int) -> PullRequest:
        """Really merge head into base. ConflictError when not open or not mergeable."""

    @abstractmethod
    def close_pull_request(self, number: int) -> PullRequest:
        """Close without merging. ConflictError when not open."""

    def ready_green_drafts(self) -> list[PullRequest]:
        """Mark draft agent PRs whose checks are green ready for review (forges without drafts: none)."""
        return []

    def open_agent_pull_requests(self) -> list[PullRequest]:
        """Open PRs whose head carries Leviathan's ``agent/`` prefix (the ``max_open_prs`` latch)."""
        return [pr for pr in self.list_pull_requests("open") if pr.head.startswith(AGENT_BRANCH_PREFIX)]
