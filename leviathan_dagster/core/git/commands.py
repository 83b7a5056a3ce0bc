"""A thin wrapper over the ``git`` command line, shared by the forge, the worker and the tests.

Every call goes through ``run_git`` so that git's failures become one of our errors (``GitError``) in one
place, prompts can never hang an unattended worker, commits carry a fixed identity, and the repository
cannot make git run code (``git_hardening``: system and global config ignored, every setting that names
a program overridden on the command line, the local config's drivers switched off).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlparse

from leviathan_dagster.core.errors import LeviathanError, NotFoundError, TransientError
from leviathan_dagster.core.git.hardening import ISOLATION_ENV, hardening_args, run_watched
from leviathan_dagster.core.locks import LockTimeout, exclusive
from leviathan_dagster.core.redaction import redact

GIT_TIMEOUT_SECONDS = 120.0
# Holding the mirror lock longer than a slow fetch means another process is stuck, not busy.
MIRROR_LOCK_TIMEOUT_SECONDS = 300.0
_STDERR_LIMIT = 2000

# A fixed identity makes commits reproducible and independent of whoever runs the worker.
DEFAULT_IDENTITY: Mapping[str, str] = {
    "GIT_AUTHOR_NAME": "Leviathan",
    "GIT_AUTHOR_EMAIL": "leviathan@localhost",
    "GIT_COMMITTER_NAME": "Leviathan",
    "GIT_COMMITTER_EMAIL": "leviathan@localhost",
}


class GitError(TransientError):
    """A git command failed. Transient by default (remotes, locks, disks); callers that know better
    (a merge conflict, a refused push) catch it and raise the error that fits."""

    def __init__(self, command: list[str], returncode: int | None, stderr: str) -> None:
        # Redacted once, here: this text reaches logs, events and error messages.
        self.command = [redact(part) for part in command]
        self.returncode = returncode
        self.stderr = redact(stderr)
        detail = _trim(self.stderr) or "(no output)"
        status = "timed out" if returncode is None else f"exited {returncode}"
        super().__init__(f"`{' '.join(self.command)}` {status}: {detail}")


class NothingToCommitError(LeviathanError):
    """``commit_all`` found a clean work tree. Not transient: retrying gives the same empty change."""


def _trim(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _STDERR_LIMIT else text[:_STDERR_LIMIT] + " ...(trimmed)"


def git_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment ``run_git`` uses: the process's without its GIT_* variables, the fixed identity,
    system and global config switched off, then ``env`` on top."""
    merged = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    merged.update(DEFAULT_IDENTITY)
    if env:
        merged.update(env)
    merged.update(ISOLATION_ENV)
    # Never prompt for credentials: an unattended worker would wait forever for an answer.
    merged["GIT_TERMINAL_PROMPT"] = "0"
    return merged


def run_git(
    args: list[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = GIT_TIMEOUT_SECONDS,
) -> str:
    """Run ``git <args>`` and return its stdout; raise GitError when it fails or times out."""
    # quotepath=off: paths with non-ASCII characters come back as themselves, not octal escapes.
    command = ["git", *hardening_args(cwd), "-c", "core.quotepath=off", *args]
    shown = ["git", "-c", "core.quotepath=off", *args]  # errors leave out the fixed hardening
    try:
        returncode, stdout, stderr = run_watched(command, cwd, git_env(env), timeout)
    except subprocess.TimeoutExpired:
        raise GitError(shown, None, f"no result after {timeout:g}s") from None
    except OSError as exc:
        raise GitError(shown, None, f"could not run git in {cwd}: {exc}") from None
    if returncode != 0:
        # Some commands (merge) report on stdout; keep both so the message says what went wrong.
        raise GitError(shown, returncode, redact(stderr + stdout, (env or {}).values()))
    return stdout


def local_path(url: str | os.PathLike[str]) -> Path | None:
    """The filesystem path behind a plain path or a ``file://`` URL; None for a network URL."""
    text = os.fspath(url)
    if text.startswith("file://"):
        return Path(unquote(urlparse(text).path))
    if "://" in text:
        return None
    # git's own rule for scp-like ``[user@]host:path``: a colon before the first slash.
    colon, slash = text.find(":"), text.find("/")
    if colon > 0 and (slash == -1 or colon < slash) and not Path(text).exists():
        return None
    return Path(text)


def clone(
    url: str,
    dest: Path,
    branch: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    shallow: bool = False,
) -> Path:
    """Clone ``url`` into ``dest`` (checking out ``branch`` when given). ``env`` carries credentials
    for this one command (see forge ``git_auth_env``): they never reach ``.git/config``.

    ``shallow``: only ``branch``'s tip, no other branch, no tag (what an attempt works on; its push
    needs nothing else, the remote has the base commit). A plain local path is still cloned whole:
    git ignores ``--depth`` there and hardlinks the objects instead, which costs nothing."""
    args = ["clone", "--quiet"]
    if branch:
        args += ["--branch", branch]
    if shallow:
        args += ["--single-branch", "--no-tags"]
        if local_path(url) is None or os.fspath(url).startswith("file://"):
            args += ["--depth", "1"]
    run_git([*args, "--", str(url), str(dest)], env=env)
    return dest


def rev_parse(cwd: Path, ref: str) -> str:
    """The commit sha ``ref`` names in the repository at ``cwd``."""
    return run_git(["rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=cwd).strip()


def ref_exists(cwd: Path, ref: str) -> bool:
    """Whether ``ref`` names a commit in the repository at ``cwd`` (bare or not)."""
    try:
        rev_parse(cwd, ref)
    except GitError:
        return False
    return True


def current_branch(cwd: Path) -> str | None:
    """The checked-out branch's short name; None on a detached HEAD."""
    try:
        return run_git(["symbolic-ref", "--quiet", "--short", "HEAD"], cwd=cwd).strip()
    except GitError as exc:
        if exc.returncode == 1:  # symbolic-ref's answer for "HEAD is detached"
            return None
        raise


def has_changes(cwd: Path) -> bool:
    """Whether the work tree differs from HEAD (tracked or untracked, ignored files aside)."""
    return bool(run_git(["status", "--porcelain", "--untracked-files=all"], cwd=cwd).strip())


def commit_all(cwd: Path, message: str) -> str:
    """Stage every change and commit it; return the new commit's sha.

    NothingToCommitError on a clean tree, so an empty change is never mistaken for a git outage.
    """
    run_git(["add", "--all"], cwd=cwd)
    if not run_git(["diff", "--cached", "--name-only"], cwd=cwd).strip():
        raise NothingToCommitError(f"nothing to commit in {cwd}")
    # --no-verify: a target's hooks are not ours to run; its test command is run explicitly instead.
    run_git(["-c", "commit.gpgsign=false", "commit", "--quiet", "--no-verify", "-m", message], cwd=cwd)
    return rev_parse(cwd, "HEAD")


def commit_index(cwd: Path, message: str) -> str:
    """Commit the index exactly as staged (nothing added); return the new commit's sha."""
    if not run_git(["diff", "--cached", "--name-only"], cwd=cwd).strip():
        raise NothingToCommitError(f"nothing staged to commit in {cwd}")
    run_git(["commit", "--quiet", "--no-verify", "-m", message], cwd=cwd)
    return rev_parse(cwd, "HEAD")


def push(cwd: Path, remote: str, refspec: str, *, env: Mapping[str, str] | None = None) -> None:
    """``git push <remote> <refspec>`` from the repository at ``cwd`` (``env``: as for ``clone``)."""
    run_git(["push", "--quiet", remote, refspec], cwd=cwd, env=env)


def init_bare(path: Path, initial_branch: str = "main") -> Path:
    """Create a bare repository at ``path`` whose HEAD points at ``initial_branch``."""
    path.mkdir(parents=True, exist_ok=True)
    run_git(["init", "--quiet", "--bare", f"--initial-branch={initial_branch}", str(path)])
    return path


def show_file(
    repo_url_or_path: str,
    ref: str,
    path: str,
    *,
    cache_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """The text of ``path`` at ``ref`` of a repository; None when the file is not there at that ref.

    A local repository (bare or not, path or ``file://``) is read in place. A network URL is read
    through a bare mirror kept in ``cache_dir``, brought up to date first (see ``fetch_mirror``).
    NotFoundError when ``ref`` does not exist.
    """
    found = find_blob(repo_url_or_path, ref, path, cache_dir=cache_dir, env=env)
    return None if found is None else read_blob(*found)


def find_blob(
    repo_url_or_path: str,
    ref: str,
    path: str,
    *,
    cache_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Path, str] | None:
    """(repository to read from, blob id) of ``path`` at ``ref``; None when no file is there.

    One ``git ls-tree`` answers both "is it a file" and "which version": a caller that has already
    parsed that blob id (``backlog_cache``) needs no further git command. NotFoundError when ``ref``
    does not exist; repositories as for ``show_file``.
    """
    repo = local_path(repo_url_or_path)
    if repo is not None and not repo.exists():
        raise NotFoundError(f"repository {repo_url_or_path} does not exist (check the target's repo_url)")
    if repo is not None and not _is_repository(repo):
        raise NotFoundError(f"{repo_url_or_path} is not a git repository (check the target's repo_url)")
    if repo is None:
        if cache_dir is None:
            raise ValueError(f"show_file needs cache_dir to read the network repository {repo_url_or_path}")
        repo = fetch_mirror(repo_url_or_path, cache_dir, env, branch=ref)
    try:
        listing = run_git(["ls-tree", "-z", "--full-tree", f"{ref}^{{commit}}", "--", path], cwd=repo)
    except GitError:
        if not ref_exists(repo, ref):
            raise NotFoundError(f"ref {ref!r} does not exist in {repo_url_or_path}") from None
        raise
    # "<mode> <type> <id>\t<path>\0"; nothing when the path is absent at that commit.
    for entry in listing.split("\0"):
        meta, _, name = entry.partition("\t")
        parts = meta.split()
        if name == path and len(parts) == 3 and parts[1] == "blob":
            return repo, parts[2]
    return None


def _is_repository(path: Path) -> bool:
    try:
        run_git(["rev-parse", "--git-dir"], cwd=path)
    except GitError:
        return False
    return True


def read_blob(repo: Path, blob_id: str) -> str:
    """The text of one blob of the repository at ``repo``."""
    return run_git(["cat-file", "blob", blob_id], cwd=repo)


def fetch_mirror(
    url: str, cache_dir: Path, env: Mapping[str, str] | None, *, branch: str | None = None
) -> Path:
    """The bare mirror of ``url`` in ``cache_dir``, cloned or fetched first (only when ``branch``, if
    given, moved on the remote): what every network read of a repository goes through."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    mirror = cache_dir / f"{key}.git"
    # Two workers fetching one mirror at once would trip over git's ref locks; take turns.
    try:
        with exclusive(cache_dir / f"{key}.lock", MIRROR_LOCK_TIMEOUT_SECONDS):
            if not (mirror / "HEAD").exists():
                run_git(["clone", "--quiet", "--mirror", "--", url, str(mirror)], env=env)
            elif branch is None or _remote_moved(mirror, branch, env):
                run_git(["fetch", "--quiet", "--prune", "origin"], cwd=mirror, env=env)
    except LockTimeout:
        raise TransientError(
            f"mirror of {url} in {cache_dir} stayed locked for {MIRROR_LOCK_TIMEOUT_SECONDS:g}s"
        ) from None
    return mirror


def _remote_moved(mirror: Path, branch: str, env: Mapping[str, str] | None) -> bool:
    """Whether the remote's ``branch`` head differs from the mirror's (or either is missing).

    ``git ls-remote`` asks for one ref's sha and transfers nothing else, where ``fetch`` negotiates
    every ref and pack: every scheduler tick reads every target's backlog, and the branch has almost
    always not moved since the last tick.
    """
    ref = branch if branch.startswith("refs/") else f"refs/heads/{branch}"
    remote = run_git(["ls-remote", "--quiet", "origin", ref], cwd=mirror, env=env).split()
    try:
        local = run_git(["rev-parse", "--verify", "--quiet", ref], cwd=mirror).strip()
    except GitError:
        return True
    return not remote or remote[0] != local
