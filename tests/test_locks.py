"""core/locks.py: one holder at a time, across threads and processes; a bounded wait."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from leviathan_dagster.core.locks import LockTimeout, exclusive


def test_a_held_lock_times_out_for_a_second_holder_and_is_free_after(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with exclusive(path, 1.0):
        started = time.monotonic()
        with pytest.raises(LockTimeout, match="stayed locked"), exclusive(path, 0.2):
            pass
        assert time.monotonic() - started >= 0.2
    with exclusive(path, 0.2):  # released with the block
        pass
    assert path.exists()  # never deleted: a waiter must never lock a file nobody else will


def test_another_process_holding_the_lock_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"f = open({str(path)!r}, 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True)\n"
            "time.sleep(0.5)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with exclusive(path, 10.0):
            waited = time.monotonic() - started
    assert waited > 0.1  # it really waited for the other process's flock
