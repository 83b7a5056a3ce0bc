"""An exclusive lock on a file, between processes and threads alike (``flock``), with a timeout.

What the local forge's pull-request records and the bare mirrors take turns on. ``flock`` is what the
filelock package uses on Unix too, so a lock file means the same to both; this one is a few lines of
the standard library, where importing filelock was a tenth of an attempt's start-up (measured with
callgrind: 51 M instructions, 25 modules and six dataclasses, for one lock per attempt).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Between tries while another process holds the lock: short next to any holder's work.
POLL_SECONDS = 0.05


class LockTimeout(Exception):
    """The lock stayed held by someone else for the whole timeout."""


@contextmanager
def exclusive(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing, never deleted: deleting a lock file lets
    a waiter lock a file nobody else will) for the ``with`` block; LockTimeout after ``timeout`` s.

    Each call opens the file anew, so two threads of one process exclude each other as two processes
    do; the lock goes with the descriptor, so it is released even if the holder dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"{path} stayed locked for {timeout:g}s") from None
                time.sleep(POLL_SECONDS)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
