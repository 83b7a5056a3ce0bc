"""``github``: pull requests on GitHub or GitHub Enterprise, through PyGithub.

Every call goes through ``call_github`` (errors translated once, retries declared in errors.py)
and every PyGithub pull request is mapped to Leviathan's ``PullRequest`` in one function,
``_to_pull_request``; no PyGithub object leaves the forge's github*.py modules.

Opening a PR is idempotent: each try first looks for an open PR from the same head, so a create that
GitHub performed but whose answer was lost (a 502 or a timeout) is found instead of repeated. A PR
carrying the same task marker from another branch is a duplicate and is refused.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from github import Github

from leviathan_dagster.core.attempts.markers import parse_task_marker
from leviathan_dagster.core.errors import ConflictError, LeviathanError
from leviathan_dagster.core.forge.base import Forge
from leviathan_dagster.core.forge.github.auth import (
    InstallationTokens,
    SourceAuth,
    git_auth_env,
    token_source_for,
)
from leviathan_dagster.core.forge.github.checks import commit_is_green
from leviathan_dagster.core.forge.github.errors import (
    GithubAuthError,
    RetryPolicy,
    call_github,
    permanent_push_refusal,
)
from leviathan_dagster.core.forge.github.location import derive_location
from leviathan_dagster.core.models import AGENT_BRANCH_PREFIX, PullRequest, TargetConfig

log = logging.getLogger("leviathan.forge.github")

# GitHub asks integrators to leave about a second between writes to stay under the secondary limits.
SECONDS_BETWEEN_WRITES = 1.0
SECONDS_BETWEEN_REQUESTS = 0.25
# GitHub's words (422) for a draft where the plan has none, and for a second PR from one head.
DRAFTS_UNSUPPORTED = "Draft pull requests are not supported in this repository"
ALREADY_EXISTS = "A pull request already exists"
DRAFT_FALLBACK_NOTE = (
    "GitHub does not support draft pull requests in this repository, so Leviathan opened this one ready "
    "for review. If the description says tests are failing, do not merge it as is."
)


def _stamp(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _to_pull_request(target_id: str, pr) -> PullRequest:
    """The one place a PyGithub PullRequest becomes Leviathan's PullRequest. Teams are named
    ``org/slug``, as they are requested (a repository's teams are its owner's)."""
    state = "merged" if pr.merged_at else pr.state
    return PullRequest(
        target_id=target_id,
        number=pr.number,
        title=pr.title,
        body=pr.body or "",
        head=pr.head.ref,
        base=pr.base.ref,
        state=state,
        created_at=_stamp(pr.created_at) or "",
        url=pr.html_url,
        merged_at=_stamp(pr.merged_at),
        closed_at=_stamp(pr.closed_at),
        merge_commit_sha=pr.merge_commit_sha if pr.merged_at else None,
        draft=bool(pr.draft),
        reviewers=tuple(
            [u.login for u in pr.requested_reviewers or []]
            + [f"{pr.base.repo.owner.login}/{t.slug}" for t in pr.requested_teams or []]
        ),
    )


class GithubForge(Forge):
    """Pull requests of one GitHub repository, authenticated by token or GitHub App."""

    def __init__(
        self,
        target: TargetConfig,
        environ: Mapping[str, str] | None = None,
        *,
        retry: RetryPolicy | None = None,
        seconds_between_writes: float = SECONDS_BETWEEN_WRITES,
        seconds_between_requests: float = SECONDS_BETWEEN_REQUESTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.target_id = target.id
        self.repo_url = target.repo_url
        self.settings = target.github
        self.api_url, self.repository = derive_location(target)
        self.owner = self.repository.split("/", 1)[0]
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._source = token_source_for(
            target,
            os.environ if environ is None else environ,
            repository=self.repository,
            api_url=self.api_url,
            clock=self._clock,
        )
        self._github = Github(
            auth=SourceAuth(self._source),
            base_url=self.api_url,
            timeout=self.settings.timeout_seconds,
            retry=None,  # retries are ours (github_errors.RetryPolicy), so writes can be made idempotent
            per_page=100,
            seconds_between_requests=seconds_between_requests,
            seconds_between_writes=seconds_between_writes,
            lazy=True,  # objects are fetched when read, inside call_github (no request in the constructor)
        )
        self._repo = self._github.get_repo(self.repository)

    def close(self) -> None:
        """Close the HTTP connections (also done when the forge is garbage collected)."""
        self._github.close()
        if isinstance(self._source, InstallationTokens):
            self._source.close()

    def __del__(self) -> None:
        # An unclosed keep-alive socket would otherwise be reported (ResourceWarning) when collected.
        if "_github" in self.__dict__:
            self.close()

    # -- plumbing ------------------------------------------------------------------------------------
    def _secrets(self) -> list[str]:
        token = getattr(self._source, "_token", None)
        if not token:
            return []
        return [token, base64.b64encode(f"x-access-token:{token}".encode()).decode("ascii")]

    def _call(self, what: str, fn):
        try:
            return call_github(fn, what, self._retry, self._secrets)
        except GithubAuthError:
            # An installation token can be revoked (or its App's permissions changed) before it
            # expires: drop it, exchange a new one, and try once more. A second 401 is the answer.
            if not isinstance(self._source, InstallationTokens) or not self._source.invalidate():
                raise
            log.info("GitHub answered 401 to the cached installation token: exchanging a new one")
            return call_github(fn, what, self._retry, self._secrets)

    def clone_url(self) -> str:
        return self.repo_url

    def git_auth_env(self) -> dict[str, str]:
        token = self._call("installation token", self._source.token)
        return git_auth_env(self.repo_url, token)

    def permanent_push_refusal(self, git_output: str) -> str | None:
        return permanent_push_refusal(git_output)

    def renew_credentials_after(self, git_output: str) -> bool:
        # GitHub answers a token it no longer honours with a 401 challenge; git, which sent the token as
        # a header it knows nothing about, then asks for a username (prompts are off) or reports the
        # 401. An installation token can be exchanged again; a personal token cannot.
        signs = ("could not read Username", "Authentication failed", "returned error: 401")
        refused = any(sign in git_output for sign in signs)
        return refused and isinstance(self._source, InstallationTokens) and self._source.invalidate()

    # -- reads ---------------------------------------------------------------------------------------
    def list_pull_requests(self, state: str = "open") -> list[PullRequest]:
        if state not in ("open", "merged", "closed", "all"):
            raise ValueError(f"state {state!r} is unknown (available: open, merged, closed, all)")
        query = "open" if state == "open" else ("all" if state == "all" else "closed")
        pulls = self._call(
            f"list {query} pull requests of {self.repository}",
            lambda: [_to_pull_request(self.target_id, pr) for pr in self._repo.get_pulls(state=query)],
        )
        return sorted((pr for pr in pulls if state == "all" or pr.state == state), key=lambda pr: pr.number)

    def get_pull_request(self, number: int) -> PullRequest:
        return self._call(
            f"get pull request #{number} of {self.repository}",
            lambda: _to_pull_request(self.target_id, self._repo.get_pull(number)),
        )

    def open_agent_pull_requests(self) -> list[PullRequest]:
        return [pr for pr in self.list_pull_requests("open") if pr.head.startswith(AGENT_BRANCH_PREFIX)]

    # -- writes --------------------------------------------------------------------------------------
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
        marker = parse_task_marker(body)
        for pr in self.list_pull_requests("open"):
            if pr.head != head and marker and pr.task_marker() == marker:
                raise ConflictError(
                    f"target {self.target_id!r}: pull request #{pr.number} ({pr.url}) is already open "
                    f"for task {marker}; not opening a duplicate"
                )
            if pr.head == head and (marker is None or pr.task_marker() != marker):
                raise ConflictError(
                    f"target {self.target_id!r}: pull request #{pr.number} is already open for {head!r}"
                )

        wants_draft = draft or self.settings.draft_until_green
        try:
            created = self._create(head, base, title, body, wants_draft)
        except ConflictError as exc:
            if wants_draft and DRAFTS_UNSUPPORTED in str(exc):
                # Private repositories on GitHub Free/Pro have no drafts: open it ready for review
                # (once) and say so on the PR, rather than failing an attempt whose branch is pushed.
                created = self._create(head, base, title, body, False)
                self._note(created.number, DRAFT_FALLBACK_NOTE)
            elif ALREADY_EXISTS in str(exc):
                created = self._adopt(head, marker, exc)
            else:
                raise
        # From here on the PR exists: nothing may fail the attempt that opened it.
        if reviewers:
            self._request_reviewers(created.number, reviewers)
        try:
            return self.get_pull_request(created.number)
        except LeviathanError as exc:
            log.warning("pull request #%s opened; reading it back failed: %s", created.number, exc)
            return created

    def _create(self, head: str, base: str, title: str, body: str, draft: bool) -> PullRequest:
        def create_once():
            # A previous try may have been performed by GitHub with its answer lost: find it first.
            existing = list(self._repo.get_pulls(state="open", head=f"{self.owner}:{head}"))
            if existing:
                return _to_pull_request(self.target_id, existing[0])
            pr = self._repo.create_pull(base=base, head=head, title=title, body=body, draft=draft)
            return _to_pull_request(self.target_id, pr)

        return self._call(f"open a pull request from {head}", create_once)

    def _adopt(self, head: str, marker: str | None, refused: ConflictError) -> PullRequest:
        """GitHub says a PR from ``head`` exists (its list had not shown it yet): adopt it if it carries
        this task's marker; anything else is a real conflict."""
        for pr in self.list_pull_requests("open"):
            if pr.head == head and marker and pr.task_marker() == marker:
                log.info("adopting pull request #%s already open from %s", pr.number, head)
                return pr
        raise refused

    def _note(self, number: int, text: str) -> None:
        """A comment on the PR, best effort: the PR is open and useful without it."""
        try:
            self._call(f"comment on #{number}", lambda: self._repo.get_issue(number).create_comment(text))
        except LeviathanError as exc:
            log.warning("could not comment on #%s: %s", number, exc)

    def _request_reviewers(self, number: int, reviewers: Sequence[str]) -> None:
        reviewers = list(dict.fromkeys(reviewers))  # a backlog owner listed twice is asked once
        users = [r for r in reviewers if "/" not in r]
        teams = [r.split("/", 1)[1] for r in reviewers if "/" in r]
        try:
            self._call(
                f"request reviewers for #{number}",
                lambda: self._repo.get_pull(number).create_review_request(
                    reviewers=users, team_reviewers=teams
                ),
            )
        except LeviathanError as exc:
            # 422 (not a collaborator), 403 (an App without organization members access, for teams),
            # or GitHub down after the PR was opened: the PR is open and useful without reviewers; say
            # why on the PR instead of failing the attempt that opened it.
            log.warning("reviewers %s not requested on #%s: %s", reviewers, number, exc)
            note = f"Leviathan could not request review from {', '.join(reviewers)} (task owner): {exc}"
            if teams and "not accessible by integration" in str(exc):
                note += ". A GitHub App needs the organization permission Members (read) to request teams."
            self._note(number, note)

    def merge_pull_request(self, number: int) -> PullRequest:
        current = self.get_pull_request(number)
        if current.state != "open":
            raise ConflictError(
                f"target {self.target_id!r}: cannot merge pull request #{number}: it is {current.state}"
            )

        def merge_once():
            pr = self._repo.get_pull(number)
            if pr.merged:  # an earlier try of this call merged it and its answer was lost
                return
            if pr.state != "open":
                raise ConflictError(
                    f"target {self.target_id!r}: cannot merge pull request #{number}: it is closed"
                )
            pr.merge(sha=pr.head.sha, commit_title=f"Merge pull request #{number} from {pr.head.ref}")

        self._call(f"merge pull request #{number}", merge_once)
        return self.get_pull_request(number)

    def close_pull_request(self, number: int) -> PullRequest:
        current = self.get_pull_request(number)
        if current.state != "open":
            raise ConflictError(
                f"target {self.target_id!r}: cannot close pull request #{number}: it is {current.state}"
            )
        self._call(f"close pull request #{number}", lambda: self._repo.get_pull(number).edit(state="closed"))
        return self.get_pull_request(number)

    def ready_green_drafts(self) -> list[PullRequest]:
        """draft_until_green: mark open agent drafts ready for review once their head commit is green."""
        if not self.settings.draft_until_green:
            return []
        promoted = []
        for pr in self.open_agent_pull_requests():
            if not pr.draft:
                continue

            def promote_if_green(number=pr.number) -> bool:
                live = self._repo.get_pull(number)
                if not live.draft or not commit_is_green(self._repo.get_commit(live.head.sha)):
                    return False
                live.mark_ready_for_review()
                return True

            if self._call(f"mark #{pr.number} ready for review", promote_if_green):
                promoted.append(self.get_pull_request(pr.number))
        return promoted
