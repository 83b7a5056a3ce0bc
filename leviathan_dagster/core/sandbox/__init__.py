"""One sandbox for everything that runs code Leviathan did not write (the target's test command, the
agent's shell): bubblewrap with new PID, network, IPC, UTS, cgroup, user and mount namespaces.

Inside, the workspace is read-only except the paths the caller names writable, ``.git/`` is always
read-only, ``/tmp`` and ``$HOME`` are private, ``/proc`` shows only the sandbox's own processes, the
environment holds an allowlist and nothing else, and the host's system directories and the Python
installation are read-only. When the first process exits the PID namespace dies with it, so no
background process survives the call. Where a sandbox cannot be created this raises
``SandboxUnavailable``: there is no unsandboxed fallback.
"""

from leviathan_dagster.core.sandbox.bwrap import (
    SandboxResult,
    SandboxUnavailable,
    run_sandboxed,
    sandbox_environment,
    sandbox_problem,
)

__all__ = [
    "SandboxResult",
    "SandboxUnavailable",
    "run_sandboxed",
    "sandbox_environment",
    "sandbox_problem",
]
