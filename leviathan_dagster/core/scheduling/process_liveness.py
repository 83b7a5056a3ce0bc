"""Is the process that executes a run still there? Its pid, host and kernel start time, compared.

A run executed in-process (``leviathan run --once``) has no run launcher and no run monitoring: if its
process is killed, Dagster keeps it STARTED forever and its task would wait for it forever. So such
runs carry the identity of the process executing them, and a run whose process is gone is dead.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as this host's kernel knows it. The start time tells a recycled pid from the original."""

    pid: int
    host: str
    start: str

    def is_gone(self) -> bool | None:
        """True if the process has ended; None if this host cannot judge (another host, no /proc)."""
        if self.host != socket.gethostname() or not Path("/proc/self/stat").exists():
            return None
        return process_start(self.pid) != self.start


def this_process() -> ProcessIdentity | None:
    """The identity of the calling process, or None where there is no /proc to check it by later."""
    start = process_start(os.getpid())
    return None if start is None else ProcessIdentity(os.getpid(), socket.gethostname(), start)


def process_start(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (field 22 of /proc/<pid>/stat), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # after the comm field, which may hold spaces
