"""File access inside a directory the target controls, that can never leave it.

A checkout is hostile input: a committed ``docs -> /etc`` or ``docs/guide.md -> ~/.bashrc`` would turn a
plain ``open(workspace / path, "w")`` into a write anywhere on the host. Every function here walks the
path one component at a time from an open descriptor of the root, with ``O_NOFOLLOW`` on each component,
so a symlink anywhere on the way is refused instead of followed, and no rename or swap in between can
redirect the walk (each step is relative to the descriptor of the step before).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from leviathan_dagster.core.errors import PolicyViolation

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts(relative: str) -> list[str]:
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or "\x00" in relative:
        raise PolicyViolation(f"{relative!r} is not a path inside the workspace")
    return [part for part in pure.parts if part != "."]


@contextlib.contextmanager
def _parent_fd(root: Path, relative: str, *, create: bool) -> Iterator[tuple[int, str]]:
    """(descriptor of the parent directory of ``relative``, its last component), every step no-follow."""
    parts = _parts(relative)
    if create:
        os.makedirs(root, exist_ok=True)  # the root is the harness's choice, not the target's
    fd = os.open(root, _DIR_FLAGS)
    try:
        for index, part in enumerate(parts[:-1]):
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _refused(relative, "/".join(parts[: index + 1])) from None
                raise
            os.close(fd)
            fd = child
        yield fd, parts[-1]
    finally:
        os.close(fd)


def _refused(relative: str, component: str) -> PolicyViolation:
    return PolicyViolation(
        f"{relative!r}: {component!r} is a symlink (or not a directory) in the workspace; "
        "Leviathan never reads or writes through a symlink"
    )


def write_bytes(root: Path, relative: str, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``root/relative``, creating missing directories; PolicyViolation if any
    component (the file included) is a symlink."""
    with _parent_fd(root, relative, create=True) as (parent, name):
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, mode, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _refused(relative, relative) from None
            raise
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)


def read_bytes(root: Path, relative: str) -> bytes | None:
    """The bytes of the regular file ``root/relative``; None when it does not exist. PolicyViolation if
    any component is a symlink (reading through one could copy a host file into a pull request)."""
    try:
        with _parent_fd(root, relative, create=False) as (parent, name):
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise _refused(relative, relative) from None
                raise
            with os.fdopen(fd, "rb") as handle:
                return handle.read()
    except FileNotFoundError:
        return None


def write_text(root: Path, relative: str, text: str) -> None:
    """``write_bytes`` of ``text`` as UTF-8, exactly as given (no newline translation)."""
    write_bytes(root, relative, text.encode("utf-8"))


def read_text(root: Path, relative: str) -> str | None:
    """``read_bytes`` decoded as UTF-8, exactly as stored (CRLF kept); None when missing."""
    data = read_bytes(root, relative)
    return None if data is None else data.decode("utf-8")
