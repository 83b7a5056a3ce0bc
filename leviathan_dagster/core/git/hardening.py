"""Git that the repository cannot program: the ``-c`` overrides and environment every git command of
Leviathan runs with (used by ``gitutil.run_git`` and the raw-bytes calls in ``paths``).

The target (its checkout, a ``conftest.py``, the model) may have planted configuration, so system and
global config are ignored, every setting that names a program is overridden on the command line (which
wins over every file), and drivers the repository-local config defines are switched off.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import threading
from pathlib import Path
from typing import Any

from leviathan_dagster.core.errors import LeviathanError

SCAN_TIMEOUT_SECONDS = 30.0

# Checked against git 2.39: command-line ``-c`` beats system, global and local config. Each of these
# would otherwise run a program the repository names (or reach a transport that does).
HARDENING: tuple[str, ...] = (
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",  # no hook runs: /dev/null/<hook> never exists
    "core.sshCommand=ssh",
    "core.askPass=",
    "core.pager=cat",
    "core.editor=true",
    "core.alternateRefsCommand=",
    "credential.helper=",  # an empty value clears every helper configured before it
    "diff.external=",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "push.gpgSign=false",
    "protocol.allow=never",  # ext:: and friends run commands; allow only the transports we use
    "protocol.file.allow=always",
    "protocol.https.allow=always",
    "protocol.http.allow=always",
    "protocol.ssh.allow=always",
)
# Settings whose *name* the repository chooses (``filter.<driver>.clean``): found in the local config
# and emptied, which git 2.39 treats as "no such program" (filters, diff and merge drivers).
_DRIVER_KEY_RE = re.compile(
    r"(?i)^(filter\..+\.(clean|smudge|process)|diff\..+\.(command|textconv)|merge\..+\.driver)$"
)
_TRANSPORT_KEY_RE = re.compile(r"(?i)^remote\..+\.(uploadpack|receivepack)$")
_TRANSPORT_DEFAULTS = {"uploadpack": "git-upload-pack", "receivepack": "git-receive-pack"}
# Local settings git obeys that cannot be neutralised by an override; their presence means something
# other than the harness wrote .git/config (url rewrites could send the credential elsewhere).
_REFUSED_KEY_RE = re.compile(r"(?i)^(url\..+\.(insteadof|pushinsteadof)|include\.path|includeif\..+\.path)$")
# The environment git gets: the process's, minus every GIT_* variable (GIT_SSH_COMMAND, GIT_EXTERNAL_DIFF,
# GIT_CONFIG_PARAMETERS, ... are programs and config too); callers pass the GIT_* they mean explicitly.
ISOLATION_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_ATTR_NOSYSTEM": "1"}


class RepositoryTampered(LeviathanError):
    """The repository's own config holds a setting only an attacker would have put there. Not
    transient: retrying the same repository gives the same answer."""


def hardening_args(cwd: Path | None = None) -> list[str]:
    """``-c`` overrides that keep git from running anything the repository at ``cwd`` configured.

    RepositoryTampered when the local config holds a setting that cannot be overridden (``url.*.insteadOf``,
    includes): only the harness writes .git/config, so that is tampering, and git must not run there.
    """
    args = [part for setting in HARDENING for part in ("-c", setting)]
    for key in _local_config_keys(cwd) if cwd is not None else ():
        if _DRIVER_KEY_RE.match(key):
            args += ["-c", f"{key}="]
        elif _TRANSPORT_KEY_RE.match(key):
            args += ["-c", f"{key}={_TRANSPORT_DEFAULTS[key.rsplit('.', 1)[1].lower()]}"]
        elif _REFUSED_KEY_RE.match(key):
            raise RepositoryTampered(
                f"{cwd}: refusing repository-local setting {key!r}: only Leviathan writes .git/config, and "
                "this one cannot be overridden safely (it would redirect remotes or pull in other files)"
            )
    return args


def _local_config_keys(cwd: Path) -> list[str]:
    """Names of the repository-local settings at ``cwd`` (none when it is not a repository). Reading
    config runs nothing; --no-includes so an include cannot hide a key from this scan (it is refused).

    The scan is a git process of its own, before every git command: an attempt's ten git commands paid
    for ten more. So its answer is remembered by the exact bytes of the config file git is going to read
    (``_scan_key``); any change to that file, however small, is a new key and a new scan."""
    key = _scan_key(cwd)
    if key is not None and key in _SCANNED:
        return list(_SCANNED[key])
    keys = _scan_local_config(cwd)
    if keys is None:  # the scan itself failed: nothing to remember
        return []
    # Remembered only if the file did not change while it was scanned (else: which bytes were read?).
    if key is not None and _scan_key(cwd) == key:
        if len(_SCANNED) >= _SCANNED_MAX:
            del _SCANNED[next(iter(_SCANNED))]  # the oldest: a long-running process sees many mirrors
        _SCANNED[key] = tuple(keys)
    return keys


# (repository directory, bytes of its config file) -> the setting names the scan found.
_SCANNED: dict[tuple[str, bytes | None], tuple[str, ...]] = {}
_SCANNED_MAX = 1024
_HEAD_RE = re.compile(rb"ref: refs/[^\0\n]+\n?|[0-9a-f]{40}\n?|[0-9a-f]{64}\n?")


def _scan_key(cwd: Path) -> tuple[str, bytes | None] | None:
    """What decides the scan's answer at ``cwd``: its git directory and the bytes of that directory's
    config; None (scan every time) unless git is certain to read exactly that file.

    Git takes ``cwd/.git`` when it is a valid git directory, else ``cwd`` itself when that is one (a
    bare repository), else it walks up. The validity test here is stricter than git's (no symlinks, no
    gitfile, a plain HEAD, ``objects`` and ``refs`` directories), so whenever it accepts a directory git
    uses that same one. A linked worktree (``commondir``) or per-worktree config (``config.worktree``)
    means more than one file: not cached.
    """
    root = os.fspath(cwd)
    dot_git = os.path.join(root, ".git")
    git_dir = dot_git if os.path.lexists(dot_git) else root
    if not _plain_git_dir(git_dir):
        return None
    try:
        fd = os.open(os.path.join(git_dir, "config"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return (os.path.realpath(git_dir), None)
    except OSError:  # a symlinked config (ELOOP), unreadable: let git and the scan decide every time
        return None
    with os.fdopen(fd, "rb") as config:
        if not stat.S_ISREG(os.fstat(config.fileno()).st_mode):
            return None
        return (os.path.realpath(git_dir), config.read())


def _plain_git_dir(path: str) -> bool:
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
        for name in ("commondir", "config.worktree"):
            if os.path.lexists(os.path.join(path, name)):
                return False
        for name in ("objects", "refs"):
            if not stat.S_ISDIR(os.lstat(os.path.join(path, name)).st_mode):
                return False
        head = os.path.join(path, "HEAD")
        if not stat.S_ISREG(os.lstat(head).st_mode):
            return False
        with open(head, "rb") as file:
            return _HEAD_RE.fullmatch(file.read(256)) is not None
    except OSError:
        return False


def _scan_local_config(cwd: Path) -> list[str] | None:
    """The scan itself; None when git could not answer (not a repository, a timeout)."""
    try:
        returncode, stdout, _ = run_watched(
            ["git", "config", "--local", "--no-includes", "--name-only", "--list", "-z"],
            cwd,
            {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, **ISOLATION_ENV},
            SCAN_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if returncode != 0:
        return None
    return [key for key in stdout.split("\0") if key]


def run_watched(
    command: list[str], cwd: Path | None, env: dict[str, str], timeout: float, *, text: bool = True
) -> tuple[int, Any, Any]:
    """(exit status, stdout, stderr) of ``command`` (str, or bytes with ``text=False``);
    TimeoutExpired, the process killed, after ``timeout`` seconds. What every git command runs through.

    Not ``subprocess.run(timeout=...)``: with a timeout it learns that the process ended by polling,
    sleeping 1, 2, 4 ... ms between looks, and git has rarely quite exited when its output ends, so
    every command paid a millisecond or more of sleep. A watchdog thread enforces the timeout here
    instead, and the wait blocks until the exit itself."""
    encoding = {"text": True, "encoding": "utf-8", "errors": "replace"} if text else {}
    with subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **encoding
    ) as proc:
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            proc.kill()

        watchdog = threading.Timer(timeout, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            stdout, stderr = proc.communicate()
        except BaseException:
            proc.kill()
            raise
        finally:
            watchdog.cancel()
    if expired.is_set():
        raise subprocess.TimeoutExpired(command, timeout)
    return proc.returncode, stdout, stderr
