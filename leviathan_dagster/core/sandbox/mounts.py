"""What the sandbox sees: the bubblewrap mount arguments for the host's system directories, the Python
installation and the workspace (read-only, except the writable paths, never through a symlink)."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from leviathan_dagster.core.attempts.path_policy import normalize_repo_path

# Read-only from the host: enough to run the interpreters and tools a test command needs. Nothing
# else of the host exists inside (no /home, /root, /work, /run, /var: no credential file, no socket).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Inside /etc, what holds a secret of the host is masked (an empty file or an empty directory).
MASKED_ETC = (
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/security/opasswd",
)
GIT_DIR = ".git"


def system_mounts() -> list[str]:
    """bwrap arguments mounting the system directories read-only (merged-/usr symlinks kept as links)."""
    args: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in MASKED_ETC:
        if not os.access(path, os.R_OK, follow_symlinks=False):
            continue  # not readable to us, so not to the sandbox either (same uid inside)
        if os.path.isdir(path) and not os.path.islink(path):
            args += ["--tmpfs", path, "--remount-ro", path]
        elif os.path.lexists(path):
            args += ["--ro-bind", "/dev/null", path]
    return args


def python_mounts() -> list[str]:
    """The running interpreter's installation and virtualenv, read-only, when outside the system dirs
    (a pyenv under /root, a virtualenv under the project): the test command usually needs them."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    args: list[str] = []
    for prefix in sorted(prefixes):
        for path in sorted({os.path.abspath(prefix), os.path.realpath(prefix)}):
            if os.path.isdir(path) and not _under(path, SYSTEM_DIRS):
                args += ["--ro-bind", path, path]
    return args


def extra_mounts(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Read-only binds the caller asked for (absolute host paths; missing ones are skipped)."""
    args: list[str] = []
    for path in paths:
        text = os.path.abspath(os.fspath(path))
        if os.path.exists(text):
            args += ["--ro-bind", text, text]
    return args


def workspace_mounts(workspace: Path, writable: Sequence[str]) -> list[str]:
    """The workspace read-only, each writable path bound read-write on top, then ``.git`` read-only.

    ``workspace`` must already be resolved (no symlink in it). A writable entry is a workspace-relative
    path or prefix (``docs/``, ``docs/guide.md``); a path that does not exist yet makes its nearest
    existing parent directory writable, so it can be created. A symlink on the way is never followed:
    the entry then gets nothing (bwrap would bind the link's target, which may be anywhere on the host).
    An existing file is bound itself, so it can be rewritten in place but not replaced by a rename.
    """
    root = str(workspace)
    args = ["--ro-bind", root, root]
    chosen: list[Path] = []
    for entry in writable:
        path = _writable_path(workspace, entry)
        if path is not None and path not in chosen:
            chosen.append(path)
    # Parents before children, so a nested writable bind is not hidden under its parent's.
    for path in sorted(chosen, key=lambda p: len(p.parts)):
        args += ["--bind", str(path), str(path)]
    git_dir = workspace / GIT_DIR
    if os.path.lexists(git_dir) and not os.path.islink(git_dir):
        args += ["--ro-bind", str(git_dir), str(git_dir)]
    return args


def _writable_path(workspace: Path, entry: str) -> Path | None:
    """The host path to bind writable for ``entry``; None when nothing may be (a symlink, ``.git``)."""
    normalized = normalize_repo_path(entry).rstrip("/")
    parts = normalized.split("/")
    if any(part.lower().rstrip(". ") in (GIT_DIR, "git~1") for part in parts):
        return None
    current = workspace
    for index, part in enumerate(parts):
        candidate = current / part
        try:
            mode = os.lstat(candidate).st_mode
        except FileNotFoundError:
            return current
        if stat.S_ISLNK(mode):
            return None
        if stat.S_ISDIR(mode):
            current = candidate
            continue
        # A file: writable if it is the entry itself; a file in the middle means the path cannot exist.
        return candidate if index == len(parts) - 1 and stat.S_ISREG(mode) else None
    return current


def _under(path: str, roots: Iterable[str]) -> bool:
    for root in roots:
        real_root = os.path.realpath(root)
        if path == real_root or path.startswith(real_root.rstrip("/") + "/"):
            return True
    return False
