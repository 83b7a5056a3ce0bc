"""Anthropic's bash tool (``bash_20250124``), every command run in the sandbox (``core.sandbox``).

Anthropic's reference bash tool is one persistent shell session. Ours runs each command as a fresh
``bash -c`` in a new sandbox (documented to the model in every result): no state, no background process
and no working-directory change survives a command, which is exactly what makes it safe. ``restart``
is accepted and answered as such. Inside: the checkout read-only except the task's scope, ``.git``
read-only, no network, no credential, private ``/tmp``, a timeout, an output cap, and the whole process
tree killed when the command returns.

The sandbox makes a not-yet-existing allowed file's parent directory writable (it cannot bind a file
that does not exist), so after each command every change outside the scope, and any change to the
backlog, is reverted and reported: nothing a command wrote out of scope can reach the commit.
"""

from __future__ import annotations

import time

from leviathan_dagster.core.generators.base import GenerationContext
from leviathan_dagster.core.generators.claude.commands import keep_scope
from leviathan_dagster.core.generators.claude.settings import ClaudeSettings
from leviathan_dagster.core.generators.claude.tools import ScopedWorkspace, ToolError

OUTPUT_CAP = 30_000
STATELESS_NOTE = "(each command runs in a fresh sandboxed shell: no state carries over between commands)"


def bash_unavailable_reason() -> str | None:
    """None when sandboxed commands can run here; else why the bash tool is not offered."""
    from leviathan_dagster.core.sandbox import sandbox_problem

    return sandbox_problem()


class SandboxedBash:
    def __init__(
        self,
        workspace: ScopedWorkspace,
        context: GenerationContext,
        settings: ClaudeSettings,
        deadline: float | None = None,
    ) -> None:
        self.workspace, self.settings, self.deadline = workspace, settings, deadline
        path = context.test_environment.get("PATH")
        self.env = {"PATH": path} if path else {}

    def run(self, args: dict) -> str:
        from leviathan_dagster.core.sandbox import SandboxUnavailable, run_sandboxed

        if args.get("restart") is True:
            return f"shell restarted {STATELESS_NOTE}"
        command = args.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ToolError("'command' must be a non-empty string (or restart: true)")
        timeout = self.settings.bash_timeout_seconds
        if self.deadline is not None:
            timeout = min(timeout, self.deadline - time.monotonic())
            if timeout < 1:
                raise ToolError("the attempt has no time left for another command")
        try:
            result = run_sandboxed(
                ["bash", "-c", command],
                workspace=self.workspace.root,
                writable=self.workspace.writable,
                timeout=timeout,
                output_cap=OUTPUT_CAP,
                env=self.env,
            )
        except SandboxUnavailable as exc:  # never run it unsandboxed
            raise ToolError(f"the sandbox failed, the command did not run: {exc}") from None
        reverted = keep_scope(self.workspace)
        status = (
            f"timed out after {timeout:.0f}s (killed)"
            if result.timed_out
            else f"exit code {result.returncode}"
        )
        parts = [result.output.rstrip(), f"[{status} {STATELESS_NOTE}]"]
        if result.truncated:
            parts.insert(1, f"[output truncated at {OUTPUT_CAP} bytes]")
        if reverted:
            parts.append(f"[reverted writes outside the paths this task may change: {', '.join(reverted)}]")
        return "\n".join(part for part in parts if part)
