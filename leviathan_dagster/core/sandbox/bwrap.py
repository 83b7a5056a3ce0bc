"""The bubblewrap runner behind ``leviathan_dagster.core.sandbox`` (see the package docstring)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from leviathan_dagster.core.attempts.path_policy import normalize_repo_path
from leviathan_dagster.core.errors import LeviathanError
from leviathan_dagster.core.sandbox.mounts import (
    extra_mounts,
    python_mounts,
    system_mounts,
    workspace_mounts,
)

# LEVIATHAN_BWRAP names the binary when it is not on PATH (or, in tests, a missing one).
BWRAP_ENV = "LEVIATHAN_BWRAP"
# Host paths (os.pathsep-separated) every sandbox also shows read-only: a toolchain outside /usr, a
# shared cache. The operator's choice, never the target's.
READ_ONLY_ENV = "LEVIATHAN_SANDBOX_READ_ONLY"
INSTALL_HINT = "apt-get install bubblewrap"
SANDBOX_HOME = "/tmp/home"
# Inherited from the caller when set; nothing else of its environment crosses into the sandbox.
ENV_ALLOWLIST = ("PATH", "LANG", "TZ", "TERM", "PYTHONHASHSEED")
_LOCALE_RE = re.compile(r"LC_[A-Z_]+")
# After the first process ends (or is killed), what is left to read is bounded: the namespace is gone.
_DRAIN_SECONDS = 10.0
_CHUNK = 65536


class SandboxUnavailable(LeviathanError):
    """A sandbox cannot be created on this machine; ``str()`` names what is missing and the fix."""


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed command ended."""

    returncode: int | None  # None when it was killed for its timeout
    output: str  # stdout and stderr interleaved, decoded with errors="replace", at most output_cap bytes
    timed_out: bool
    truncated: bool  # the output reached output_cap; the rest was read and dropped


def bwrap_binary() -> str | None:
    """The bubblewrap executable to use, or None when there is none."""
    configured = os.environ.get(BWRAP_ENV)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("bwrap")


PROC_MOUNT = ("--proc", "/proc")
EMPTY_PROC = ("--tmpfs", "/proc")
# How /proc is given to the sandbox: decided once by the probe in ``sandbox_problem``.
_PROC_ARGS: list[str] = list(PROC_MOUNT)


def _probe(binary: str, proc_args: Sequence[str]) -> subprocess.CompletedProcess:
    argv = [binary, *_isolation_args(), *system_mounts(), *proc_args, "--dev", "/dev", "--", "true"]
    return subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=30, env={})


@functools.cache
def sandbox_problem() -> str | None:
    """None when a sandbox can be created here, else why not (what is missing and how to fix it).

    Probed once per process by creating a real sandbox with every namespace ``run_sandboxed`` uses.
    """
    binary = bwrap_binary()
    if binary is None:
        where = os.environ.get(BWRAP_ENV)
        detail = f" ({BWRAP_ENV}={where} is not executable)" if where else ""
        return f"bubblewrap (bwrap) is not installed{detail}: {INSTALL_HINT}"
    try:
        probe = _probe(binary, PROC_MOUNT)
        if (
            probe.returncode != 0
            and "mount proc" in probe.stderr
            and _probe(binary, EMPTY_PROC).returncode == 0
        ):
            # Inside a container (a Kubernetes pod, another sandbox) the kernel may refuse a new proc
            # mount (the outer /proc is partly masked). An empty /proc then: no process of anyone is
            # visible, which is stricter than our own PID namespace's /proc, and commands still run.
            _PROC_ARGS[:] = EMPTY_PROC
            return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap ({binary}) cannot be run: {exc}"
    if probe.returncode == 0:
        return None
    message = " ".join(probe.stderr.split()) or f"exit status {probe.returncode}"
    if re.search(r"(?i)namespace|uid map|operation not permitted|permission denied", message):
        return (
            f"user namespaces are disabled: bwrap said {message!r}; enable them "
            "(sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0; on Ubuntu also "
            "kernel.apparmor_restrict_unprivileged_userns=0; in a container, allow unshare/CLONE_NEWUSER)"
        )
    return f"bubblewrap cannot create a sandbox here: {message}"


def sandbox_environment(
    env: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The sandbox's whole environment: the allowlisted variables of ``environ`` (default: this
    process's), a private HOME, then ``env`` on top. No credential crosses unless ``env`` carries it."""
    source = os.environ if environ is None else environ
    clean = {key: source[key] for key in ENV_ALLOWLIST if key in source}
    clean.update({key: value for key, value in source.items() if _LOCALE_RE.fullmatch(key)})
    clean.update({"HOME": SANDBOX_HOME, "TMPDIR": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"})
    clean.update(env or {})
    return clean


def run_sandboxed(
    argv: Sequence[str],
    *,
    workspace: Path,
    writable: Sequence[str] = (),
    timeout: float,
    output_cap: int = 1_000_000,
    env: Mapping[str, str] | None = None,
    cwd: str = ".",
    read_only: Sequence[str | os.PathLike[str]] = (),
) -> SandboxResult:
    """Run ``argv`` in a fresh sandbox over ``workspace`` and wait for it (at most ``timeout`` seconds).

    ``writable``: workspace-relative paths or prefixes that may change (see ``workspace_mounts``);
    ``cwd``: workspace-relative; ``env``: added to the allowlisted environment; ``read_only``: extra
    absolute host paths to show read-only (besides those in LEVIATHAN_SANDBOX_READ_ONLY). Every process
    the command starts ends with the call. Raises SandboxUnavailable when no sandbox can be created;
    it never runs ``argv`` unsandboxed.
    """
    if not argv:
        raise ValueError("run_sandboxed needs a command")
    root = Path(os.path.realpath(workspace))
    if not root.is_dir() or root == Path("/"):
        raise ValueError(f"sandbox workspace {workspace} is not a directory")
    chdir = root if cwd in ("", ".") else root / normalize_repo_path(cwd).rstrip("/")
    # No probe first: the command's own sandbox is the proof that one can be made here (a probe is a
    # whole bwrap run of its own, on every attempt). Only when bwrap is missing, or could not set the
    # sandbox up (the command then never ran), does ``sandbox_problem`` probe, to say why; if the probe
    # finds that /proc has to be an empty one here, the command is started once more that way.
    while True:
        binary = bwrap_binary()
        if binary is None:
            raise SandboxUnavailable(sandbox_problem() or "bubblewrap (bwrap) is not installed")
        proc_args = list(_PROC_ARGS)
        command = [
            binary,
            *_isolation_args(),
            *system_mounts(),
            *proc_args,
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/var/tmp",
            "--dir",
            SANDBOX_HOME,
            # After the private /tmp, which would otherwise hide what lives below it (a venv in /tmp).
            *python_mounts(),
            *extra_mounts([*_configured_read_only(), *read_only]),
            *workspace_mounts(root, writable),
            "--chdir",
            str(chdir),
        ]
        result, output = _start(command, argv, env, timeout, output_cap)
        if result is not None and (result.timed_out or result.returncode is not None):
            return SandboxResult(result.returncode, result.output, result.timed_out, result.truncated)
        # bwrap reported no exit of the command: the sandbox was not made (before or after its child
        # started: a refused /proc mount comes after), or the command could not be executed.
        problem = sandbox_problem()
        if problem is not None:
            raise SandboxUnavailable(problem)
        if proc_args != _PROC_ARGS:
            continue  # /proc must be an empty one here: the mounts come before the command, it never ran
        if result is None:
            raise SandboxUnavailable(f"bubblewrap could not create the sandbox: {output.strip()}")
        # The sandbox works (the probe says so): the command itself could not start ("bwrap: execvp").
        return SandboxResult(result.exit_status, result.output, False, result.truncated)


class _Run(NamedTuple):
    """One bwrap run as seen from outside: ``returncode`` is None unless bwrap reported the command's
    exit (or it timed out); ``exit_status`` is bwrap's own."""

    returncode: int | None
    exit_status: int
    output: str
    timed_out: bool
    truncated: bool


def _start(
    command: list[str], argv: Sequence[str], env: Mapping[str, str] | None, timeout: float, output_cap: int
) -> tuple[_Run | None, str]:
    """Run ``argv`` under the bwrap ``command``: (how it went, or None when bwrap never started a
    child; the output)."""
    status_read, status_write = os.pipe()
    try:
        proc = subprocess.Popen(
            [*command, "--json-status-fd", str(status_write), "--", *argv],
            env=sandbox_environment(env),
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(status_write,),
            start_new_session=True,
        )
    except OSError as exc:
        os.close(status_read)
        raise SandboxUnavailable(f"bubblewrap could not be started: {exc}") from exc
    finally:
        os.close(status_write)
    with os.fdopen(status_read, "rb") as status_pipe:
        return _wait(proc, status_pipe, timeout, output_cap)


def _configured_read_only() -> list[str]:
    return [path for path in os.environ.get(READ_ONLY_ENV, "").split(os.pathsep) if os.path.isabs(path)]


def _isolation_args() -> list[str]:
    # --unshare-all: user (when possible), IPC, PID, network, UTS, cgroup, mount. --die-with-parent and
    # the PID namespace end every process of the sandbox with it; --new-session stops TIOCSTI tricks.
    return [
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
    ]


def _wait(proc: subprocess.Popen, status_pipe, timeout: float, output_cap: int) -> tuple[_Run | None, str]:
    reader = _OutputReader(proc.stdout, output_cap)
    reader.start()
    timed_out = False
    try:
        timed_out = not _exited_within(proc, max(timeout, 0.001))
    finally:
        # bwrap is the group leader; killing it kills the sandbox's init (--die-with-parent), and the
        # kernel then kills everything left in the PID namespace.
        _kill_group(proc.pid)
        proc.wait()
    reader.join(_DRAIN_SECONDS)
    status = status_pipe.read().decode("utf-8", "replace")
    output = reader.text()
    if not timed_out and '"child-pid"' not in status:
        # bwrap itself failed (a namespace): the command never ran; its message says why.
        return None, output
    returncode = None if timed_out else _exit_code(status)
    return _Run(returncode, proc.returncode, output, timed_out, reader.truncated), output


def _exited_within(proc: subprocess.Popen, timeout: float) -> bool:
    """Whether ``proc`` exits within ``timeout`` seconds; it is not reaped, so its pid (and process
    group) stays its own for the kill that follows.

    Woken by the exit itself through a pidfd. ``Popen.wait(timeout)`` polls instead, sleeping up to
    50 ms between looks: a test command was seen to end up to that much later than it did, and a
    trivial one cost twice its time. Without pidfds (an old kernel, a seccomp profile) it polls."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while True:  # poll() may return early (EINTR is retried, but be exact about the deadline)
            if poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                return True
            if time.monotonic() >= deadline:
                return False
    finally:
        os.close(pidfd)


def _exit_code(status: str) -> int | None:
    """The command's exit code as bwrap reported it; None when it reported none (no command ran)."""
    for line in status.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "exit-code" in record:
            return int(record["exit-code"])
    return None


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(pid, signal.SIGKILL)


class _OutputReader(threading.Thread):
    """Reads the sandbox's output to its end, keeping the first ``cap`` bytes."""

    def __init__(self, stream, cap: int) -> None:
        super().__init__(daemon=True)
        self.stream, self.cap = stream, cap
        self.data = bytearray()
        self.truncated = False

    def run(self) -> None:
        with self.stream:
            while chunk := self.stream.read1(_CHUNK):
                room = self.cap - len(self.data)
                if len(chunk) > room:
                    self.truncated = True
                self.data += chunk[: max(room, 0)]

    def text(self) -> str:
        return bytes(self.data).decode("utf-8", errors="replace")
