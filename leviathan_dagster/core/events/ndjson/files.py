"""File plumbing of the NDJSON log: its metadata file, durable renames, and reading a file backwards."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from leviathan_dagster.core.errors import ConfigError, NotFoundError

_TAIL_CHUNK = 8192


def load_or_create_meta(
    path: Path, meta_path: Path, log_id: str | None, fmt: str, *, create: bool = True
) -> str:
    """The log_id stored in ``meta_path``, creating the file for a new log (call under the log's lock).

    With ``create=False`` (a read-only open) a missing log is :class:`NotFoundError` instead: a read
    command must never create the log it was asked to read.
    """
    if log_id is not None and (not isinstance(log_id, str) or not log_id):
        raise ConfigError(f"event log {path}: log_id must be a non-empty string, got {log_id!r}")
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_bytes())
            stored_id, stored_fmt = meta["log_id"], meta["format"]
            if not isinstance(stored_id, str) or not stored_id:
                raise ValueError(f"log_id {stored_id!r} is not a non-empty string")
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"event log metadata {meta_path} is unreadable: {exc!r}") from exc
        if stored_fmt != fmt:
            raise ConfigError(f"{meta_path}: format {stored_fmt!r} is not supported (expected {fmt!r})")
        if log_id is not None and log_id != stored_id:
            raise ConfigError(
                f"{meta_path}: log_id is {stored_id!r} but {log_id!r} was requested; "
                "this path belongs to another log"
            )
        return stored_id
    if not create and not (path.exists() and path.stat().st_size > 0):
        raise NotFoundError(f"no event log at {path}")
    if log_id is None and path.exists() and path.stat().st_size > 0:
        raise ConfigError(
            f"event log {path} has events but no {meta_path.name}: its log_id (and so its "
            "genesis hash) is unknown; pass log_id= to recreate the metadata"
        )
    new_id = log_id or str(uuid.uuid4())
    write_atomically(meta_path, json.dumps({"format": fmt, "log_id": new_id}).encode() + b"\n")
    return new_id


def after_last_newline(fd: int, end: int) -> int:
    """Offset just after the last b"\\n" before ``end`` (0 if none), reading backwards in chunks."""
    pos = end
    while pos > 0:
        start = max(0, pos - _TAIL_CHUNK)
        found = os.pread(fd, pos - start, start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        pos = start
    return 0


def count_newlines(fd: int, end: int) -> int:
    count, pos = 0, 0
    while pos < end:
        chunk = os.pread(fd, min(1 << 20, end - pos), pos)
        count += chunk.count(b"\n")
        pos += len(chunk)
    return count


def write_atomically(path: Path, data: bytes) -> None:
    # Write a temporary file, fsync it, rename it over the target, fsync the directory: a reader (or a
    # crash) sees the old file or the whole new one, never a half-written metadata file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
