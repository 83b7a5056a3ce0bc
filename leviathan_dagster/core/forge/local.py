"""The embedded forge: a git repository on disk plus pull-request records as JSON files.

The repository (``repo_url``: a path or ``file://`` URL) plays the remote: workers push attempt branches
to it with plain git, and merging really merges and pushes the base branch back. It should be a bare
repository (``git init --bare``): git refuses pushes to the checked-out branch of a non-bare one.

Records live at ``<home>/forge/<target_id>/pulls/<number:06d>.json``; a PR's ``url`` is its record's
``file://`` URL (what the Dagster UI links to). Every write (open, merge, close) happens under one file
lock per target, so concurrent workers never reuse a number, never open two PRs for one head (or for one
task: the body's task marker), and never race each other pushing the base branch. Opening again what is
already open from the same head with the same marker returns that PR, as the GitHub forge does for a
create whose answer was lost.

The scheduler asks for the open PRs of every target on every tick, for years: reading every record ever
written would grow without bound (1.5 s at 10k records). An index, ``<home>/forge/<target_id>/open/``,
holds one empty file per PR that may be open, so that read costs what is open. The marker is created
*before* an opening record is written and removed *after* a closing one is, so a crash at any point
leaves a marker too many (skipped, since the record says it is not open), never one too few. Homes from
before the index get it built by one full scan (``open/.complete`` says it was).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from leviathan_dagster.core.attempts.markers import parse_task_marker
from leviathan_dagster.core.errors import ConfigError, ConflictError, NotFoundError, TransientError
from leviathan_dagster.core.forge.base import Forge
from leviathan_dagster.core.git import commands as gitutil
from leviathan_dagster.core.locks import LockTimeout, exclusive
from leviathan_dagster.core.models import PullRequest

PR_STATES = ("open", "merged", "closed")
# A merge clones the repository under the lock; a holder past this is stuck, not slow.
LOCK_TIMEOUT_SECONDS = 300.0
_PUSH_REFUSED_MARKERS = ("refusing to update checked out branch", "denyCurrentBranch")


def local_forge_pr_records_dir(home: Path, target_id: str) -> Path:
    """Where the local forge keeps the pull-request records of ``target_id``."""
    return Path(home) / "forge" / target_id / "pulls"


def local_pr_record_path(home: Path, target_id: str, number: int) -> Path:
    """The record of pull request ``number`` of ``target_id`` (absolute: it is the PR's URL)."""
    return (local_forge_pr_records_dir(home, target_id) / f"{number:06d}.json").absolute()


def browsable_pr_url(pr_url: str | None, home: Path, target_id: str, number: int | None) -> str | None:
    """A URL a browser can open for a PR: a forge's web page as it is; for the local forge, the
    ``file://`` URL of the PR's record under ``home`` when it is there. That also covers logs from
    before local PRs had one (``local://<target>/pull/<n>``) and workers whose home was mounted
    elsewhere (a pod's path). None when neither exists."""
    if pr_url and pr_url.startswith(("https://", "http://")):
        return pr_url
    if number is not None:
        record = local_pr_record_path(home, target_id, number)
        if record.is_file():
            return record.as_uri()
    return pr_url if pr_url and pr_url.startswith("file://") else None


_INDEX_COMPLETE = ".complete"


def _numbered(folder: Path, suffix: str = "") -> list[str]:
    """Names in ``folder`` that are a number followed by ``suffix`` (temp files start with '.')."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return [n for n in names if n.endswith(suffix) and n[: len(n) - len(suffix)].isdigit()]


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LocalForge(Forge):
    """Pull requests of one on-disk target repository, stored as JSON records under ``home``."""

    def __init__(self, target_id: str, repo_url: str, home: Path) -> None:
        repo = gitutil.local_path(repo_url)
        if repo is None:
            raise ConfigError(
                f"target {target_id!r}: the local forge needs a repository path or file:// URL, "
                f"got {repo_url!r}"
            )
        self.target_id = target_id
        self.repo_url = repo_url
        self._repo = repo
        self._records = local_forge_pr_records_dir(home, target_id)
        self._lock_path = self._records.parent / "pulls.lock"

    def clone_url(self) -> str:
        return str(self._repo)

    # -- reads ---------------------------------------------------------------------------------------

    def list_pull_requests(self, state: str = "open") -> list[PullRequest]:
        if state != "all" and state not in PR_STATES:
            raise ValueError(f"state {state!r} is unknown (available: {', '.join(PR_STATES)}, all)")
        if not self._records.is_dir():
            return []
        if state == "open":
            return self._list_open()
        # Zero-padded names sort by number; temp files of in-flight writes start with "." and are skipped.
        pulls = [self._read(path) for path in sorted(self._records.glob("[0-9]*.json"))]
        return [pr for pr in pulls if state == "all" or pr.state == state]

    def _list_open(self, *, locked: bool = False) -> list[PullRequest]:
        """The open PRs, through the index (``locked``: the caller holds the target's lock)."""
        if not (self._open_index / _INDEX_COMPLETE).exists():
            if locked:
                self._build_open_index()
            else:
                with self._locked():
                    self._build_open_index()
        pulls = []
        for number in sorted(int(name) for name in _numbered(self._open_index)):
            path = self._record_path(number)
            if path.is_file():  # a marker without its record: an open that crashed before writing it
                pr = self._read(path)
                if pr.state == "open":
                    pulls.append(pr)
        return pulls

    def get_pull_request(self, number: int) -> PullRequest:
        path = self._record_path(number)
        if not path.is_file():
            raise NotFoundError(f"target {self.target_id!r} has no pull request #{number}")
        return self._read(path)

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
        self._require_repo()
        for role, branch in (("head", head), ("base", base)):
            if not gitutil.ref_exists(self._repo, f"refs/heads/{branch}"):
                raise NotFoundError(
                    f"target {self.target_id!r}: {role} branch {branch!r} does not exist in {self._repo}"
                    + (" (push it before opening the pull request)" if role == "head" else "")
                )
        if head == base:
            raise ConflictError(f"target {self.target_id!r}: head and base are both {head!r}")
        marker = parse_task_marker(body)
        with self._locked():
            for pr in self._list_open(locked=True):
                if pr.head == head and marker and pr.task_marker() == marker:
                    return pr  # the same attempt opening again (its first answer was lost): adopt it
                if pr.head == head:
                    raise ConflictError(
                        f"target {self.target_id!r}: pull request #{pr.number} is already open for {head!r}"
                    )
                if marker and pr.task_marker() == marker:
                    raise ConflictError(
                        f"target {self.target_id!r}: pull request #{pr.number} ({pr.url}) is already open "
                        f"for task {marker}; not opening a duplicate"
                    )
            # The highest record number, from the file names alone (records are never deleted).
            number = max((int(name[:-5]) for name in _numbered(self._records, ".json")), default=0) + 1
            pr = PullRequest(
                target_id=self.target_id,
                number=number,
                title=title,
                body=body,
                head=head,
                base=base,
                state="open",
                created_at=_utc_now(),
                # The record itself, written just below: a URL that a browser or a terminal opens.
                url=self._record_path(number).absolute().as_uri(),
                draft=draft,
                reviewers=tuple(dict.fromkeys(reviewers)),
            )
            self._mark_open(number)
            self._write(pr)
        return pr

    def merge_pull_request(self, number: int) -> PullRequest:
        self._require_repo()
        with self._locked():
            pr = self._require_open(number, "merge")
            sha = self._merge_and_push(pr)
            merged = dataclasses.replace(pr, state="merged", merged_at=_utc_now(), merge_commit_sha=sha)
            self._write(merged)
            self._unmark_open(number)
        return merged

    def close_pull_request(self, number: int) -> PullRequest:
        with self._locked():
            pr = self._require_open(number, "close")
            closed = dataclasses.replace(pr, state="closed", closed_at=_utc_now())
            self._write(closed)
            self._unmark_open(number)
        return closed

    # -- internals -----------------------------------------------------------------------------------

    def _merge_and_push(self, pr: PullRequest) -> str:
        """Merge head into base in a scratch clone and push base back; return the merge commit's sha."""
        for branch in (pr.head, pr.base):
            if not gitutil.ref_exists(self._repo, f"refs/heads/{branch}"):
                raise ConflictError(
                    f"target {self.target_id!r}: cannot merge #{pr.number}: branch {branch!r} "
                    f"no longer exists in {self._repo}"
                )
        message = f"Merge pull request #{pr.number} from {pr.head}\n\n{pr.title}"
        with tempfile.TemporaryDirectory(prefix="leviathan-merge-") as scratch:
            work = gitutil.clone(str(self._repo), Path(scratch) / "repo", branch=pr.base)
            try:
                gitutil.run_git(
                    ["-c", "commit.gpgsign=false", "merge", "--no-ff", "-m", message, f"origin/{pr.head}"],
                    cwd=work,
                )
            except gitutil.GitError as exc:
                raise self._merge_failure(pr, work, exc) from None
            try:
                gitutil.push(work, "origin", f"HEAD:refs/heads/{pr.base}")
            except gitutil.GitError as exc:
                if any(marker in exc.stderr for marker in _PUSH_REFUSED_MARKERS):
                    raise ConfigError(
                        f"target {self.target_id!r}: {self._repo} refused the push of {pr.base!r} because "
                        "that branch is checked out there; the local forge's repository must be bare "
                        "(git clone --bare, or git init --bare)"
                    ) from None
                raise
            return gitutil.rev_parse(work, "HEAD")

    def _merge_failure(self, pr: PullRequest, work: Path, exc: gitutil.GitError) -> ConflictError:
        conflicted = gitutil.run_git(["diff", "--name-only", "--diff-filter=U"], cwd=work).split()
        # The scratch clone is thrown away, but abort anyway so nothing half-merged is ever pushed.
        if conflicted:
            gitutil.run_git(["merge", "--abort"], cwd=work)
            return ConflictError(
                f"target {self.target_id!r}: pull request #{pr.number} ({pr.head} into {pr.base}) "
                f"has merge conflicts in: {', '.join(conflicted)}; it stays open"
            )
        return ConflictError(
            f"target {self.target_id!r}: pull request #{pr.number} cannot be merged: {exc}; it stays open"
        )

    def _require_open(self, number: int, action: str) -> PullRequest:
        pr = self.get_pull_request(number)
        if pr.state != "open":
            raise ConflictError(
                f"target {self.target_id!r}: cannot {action} pull request #{number}: it is {pr.state}"
            )
        return pr

    def _require_repo(self) -> None:
        if not self._repo.exists():
            raise ConfigError(
                f"target {self.target_id!r}: the local forge's repository {self._repo} does not exist"
            )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._records.mkdir(parents=True, exist_ok=True)
        with ExitStack() as held:
            try:
                held.enter_context(exclusive(self._lock_path, LOCK_TIMEOUT_SECONDS))
            except LockTimeout:
                raise TransientError(
                    f"target {self.target_id!r}: pull-request lock {self._lock_path} stayed busy "
                    f"for {LOCK_TIMEOUT_SECONDS:g}s"
                ) from None
            yield

    @property
    def _open_index(self) -> Path:
        return self._records.parent / "open"

    def _build_open_index(self) -> None:
        """Index the open records of a home written before the index existed (caller holds the lock)."""
        if (self._open_index / _INDEX_COMPLETE).exists():
            return  # another process built it while this one waited for the lock
        self._open_index.mkdir(parents=True, exist_ok=True)
        for path in sorted(self._records.glob("[0-9]*.json")):
            pr = self._read(path)
            if pr.state == "open":
                self._mark_open(pr.number)
        (self._open_index / _INDEX_COMPLETE).touch()

    def _mark_open(self, number: int) -> None:
        self._open_index.mkdir(parents=True, exist_ok=True)
        (self._open_index / f"{number:06d}").touch()
        if not (self._open_index / _INDEX_COMPLETE).exists() and len(_numbered(self._records, ".json")) == 0:
            (self._open_index / _INDEX_COMPLETE).touch()  # a new target: nothing to build

    def _unmark_open(self, number: int) -> None:
        (self._open_index / f"{number:06d}").unlink(missing_ok=True)

    def _record_path(self, number: int) -> Path:
        return self._records / f"{number:06d}.json"

    def _read(self, path: Path) -> PullRequest:
        record = json.loads(path.read_text(encoding="utf-8"))
        record["reviewers"] = tuple(record.get("reviewers", ()))  # JSON has lists; the model has tuples
        return PullRequest(**record)

    def _write(self, pr: PullRequest) -> None:
        """Replace the record atomically: a reader sees the old or the new file, never half of one."""
        data = json.dumps(dataclasses.asdict(pr), indent=2, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self._records)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._record_path(pr.number))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # fsync the directory too, or a crash could forget the rename though the data reached the disk.
        dir_fd = os.open(self._records, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
