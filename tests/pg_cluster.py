"""A throwaway PostgreSQL cluster of the test's own (initdb + pg_ctl on a free loopback port), so a
test may stop and restart *its* server without touching the shared one on 5432. As root the server
binaries run as the ``postgres`` user (PostgreSQL refuses to run as root), as ``scripts/with-test-services``
does for the suite's own throwaway cluster."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

START_TIMEOUT_SECONDS = 120  # pg_ctl -w waits this long for the server to accept connections


def _server_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if not found:
        pytest.fail(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: install the Debian package "
            "'postgresql' (these tests are never skipped)",
            pytrace=False,
        )
    return Path(found[-1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThrowawayCluster:
    """One cluster in a temporary directory; ``stop`` and ``start`` are a real server restart."""

    def __init__(self) -> None:
        self.bin = _server_bin()
        self.root = Path(tempfile.mkdtemp(prefix="leviathan-pg-restart-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            self._as_owner = ["runuser", "-u", "postgres", "--"]
        self._pg_ctl(["initdb", "-o", "-U postgres --auth=trust", "-s"])
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.running = False

    def _pg_ctl(self, args: list[str]) -> None:
        command = [*self._as_owner, str(self.bin / "pg_ctl"), "-D", str(self.data), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS + 30)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise AssertionError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}\n{tail}")

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c max_connections=50 -c fsync=on"
        )
        self._pg_ctl(
            [
                "-l",
                str(self.root / "server.log"),
                "-w",
                "-t",
                str(START_TIMEOUT_SECONDS),
                "-o",
                options,
                "start",
            ]
        )
        self.running = True

    def stop(self) -> None:
        """``pg_ctl stop -m fast``: every session is ended (rolled back), as in a real restart."""
        self._pg_ctl(["-w", "-t", str(START_TIMEOUT_SECONDS), "-m", "fast", "stop"])
        self.running = False

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl(["-m", "immediate", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)
