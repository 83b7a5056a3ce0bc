"""Stopping a long-running command by signal: cleanly on the first SIGINT/SIGTERM, at once on the second.

``leviathan run --interval N`` wraps its loop in :class:`GracefulStop`. The loop asks
:meth:`GracefulStop.poll` between steps (and the cycle asks it before each launch), sleeps with
:meth:`GracefulStop.sleep`, and ends when a stop is requested. A second signal raises
:class:`StopNow` wherever the process is, so ``finally`` blocks (and the executor's cleanup) still run.

Dagster's in-process execution installs its own SIGINT/SIGTERM handler while a run executes (it turns
the signal into an interrupt of the op: the attempt in flight is canceled and recorded by
``execute_attempt``). Our handler is not called then, so signals are also counted from Python's
*wakeup fd*, which the interpreter writes for every handled signal whoever handles it: a signal that
Dagster took is still seen at the next :meth:`poll`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopNow(SystemExit):
    """The second signal: leave at once (exit status 128 + the signal's number, as a shell reports)."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class _WakeUp(Exception):
    """Raised by the handler to end :meth:`GracefulStop.sleep` early (a sleep resumes otherwise)."""


class GracefulStop:
    """Counts SIGINT/SIGTERM while active; restores the previous handlers and wakeup fd on exit.

    ``announce`` gets one line when the second signal makes the process stop at once.
    Only usable on the main thread (signal handlers live there).
    """

    def __init__(self, announce: Callable[[str], None] = print) -> None:
        self.announce = announce
        self.received: list[int] = []
        self._sleeping = False
        self._fds: tuple[int, int] | None = None
        self._previous: dict[int, object] = {}
        self._previous_wakeup = -1

    # -- context ---------------------------------------------------------------------------------
    def __enter__(self) -> GracefulStop:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._fds = (read_fd, write_fd)
        self._previous_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self._previous = {signum: signal.signal(signum, self._handle) for signum in SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._previous_wakeup)
        if self._fds is not None:
            for fd in self._fds:
                os.close(fd)
            self._fds = None

    # -- what the loop asks ----------------------------------------------------------------------
    @property
    def requested(self) -> bool:
        return bool(self.received)

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.received[0]).name if self.received else None

    def poll(self) -> bool:
        """Whether a stop was requested (counting signals Dagster's handler took meanwhile); raises
        :class:`StopNow` if a second signal has arrived."""
        self._drain()
        return self.requested

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return early (True) as soon as a stop is requested."""
        deadline = time.monotonic() + seconds
        while not self.poll():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._sleeping = True
            try:
                time.sleep(remaining)
            except _WakeUp:
                pass
            finally:
                self._sleeping = False
        return True

    # -- signals ---------------------------------------------------------------------------------
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # The wakeup fd already holds this signal's byte: counting happens in one place, _drain.
        self._drain()
        if self._sleeping and self.requested:
            raise _WakeUp

    def _drain(self) -> None:
        if self._fds is None:
            return
        while True:
            try:
                data = os.read(self._fds[0], 512)
            except BlockingIOError:
                return
            if not data:
                return
            for signum in data:
                if signum in SIGNALS:
                    self._received(signum)

    def _received(self, signum: int) -> None:
        self.received.append(signum)
        if len(self.received) >= 2:
            name = signal.Signals(signum).name
            with contextlib.suppress(Exception):  # a closed terminal must not keep us running
                self.announce(f"second signal ({name}): stopping now")
            raise StopNow(signum)
