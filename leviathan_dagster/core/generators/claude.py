"""ClaudeGenerator ("rewrite mode"): Claude edits the workspace through a few checked tools.

The loop in ``AgentRun.run`` is the whole agent: call the model (limits checked first), run the tools
it asked for, and when it stops asking, let the harness run the tests and feed failures back, at most
``max_repair_rounds`` times. Every ending is an ``AgentStop``. Only counts and hashes are recorded,
never a prompt or a response.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from leviathan_dagster.core.errors import PolicyViolation
from leviathan_dagster.core.generators import claude_prompts as prompts
from leviathan_dagster.core.generators import claude_stops as stops
from leviathan_dagster.core.generators.base import GenerationContext, Generator
from leviathan_dagster.core.generators.claude_tools import TOOLS, ScopedWorkspace, TestRun, ToolError
from leviathan_dagster.core.generators.usage import CallUsage
from leviathan_dagster.core.models import GeneratedChange, Task

log = logging.getLogger("leviathan.claude")
MIN_CALL_SECONDS = 5.0


class ClaudeGenerator(Generator):
    name = "claude"

    def __init__(self, settings=None) -> None:
        # Imported here: the SDK takes seconds to import, and only an attempt that uses Claude needs it.
        from leviathan_dagster.core.generators.claude_client import ClaudeClient, ClaudeSettings

        self.settings = settings or ClaudeSettings.from_environ()
        self.client = ClaudeClient(self.settings)

    def generate(
        self, task: Task, workspace: Path, context: GenerationContext | None = None
    ) -> GeneratedChange:
        run = AgentRun(self, task, workspace, context or GenerationContext())
        stop = run.run()
        # Failing tests may still become a draft PR when the policy says so: the worker's own final test
        # run decides, and labels the PR failing.
        draft_allowed = isinstance(stop, stops.TestsFailed) and run.policy.allow_draft_on_failing_tests
        if stop.failure_type is not None and not draft_allowed:
            raise stop
        files = tuple(sorted(run.workspace.written))
        return GeneratedChange(files=files, summary=f"claude: {stop.summary}", details=stop.record)


class AgentRun:
    def __init__(
        self, generator: ClaudeGenerator, task: Task, workspace: Path, context: GenerationContext
    ) -> None:
        from leviathan_dagster.core.generators.claude_budget import Budget

        self.settings, self.client, self.context, self.policy = (
            generator.settings,
            generator.client,
            context,
            context.policy,
        )
        self.deadline = context.deadline or time.monotonic() + self.policy.attempt_timeout_seconds
        self.workspace = ScopedWorkspace(workspace, task.allowed_paths, self.policy.allowed_path_prefixes)
        self.budget = Budget(self.policy, context.usage, self.settings.model, self.settings.max_output_tokens)
        allowed = list(task.allowed_paths)
        self.system = prompts.render(
            "system.txt",
            allowed_paths=allowed,
            test_command=" ".join(context.test_command),
            max_repair_rounds=self.policy.max_repair_rounds,
        )
        first = prompts.render_task(task, allowed_paths=allowed)
        self.messages: list[dict] = [{"role": "user", "content": first}]
        digest = hashlib.sha256(f"{self.system}\0{first}".encode()).hexdigest()
        context.usage.describe(
            model=self.settings.model, template_version=prompts.template_version(), prompt_sha256=digest
        )
        self.repairs, self.last_tests = 0, None

    def run(self) -> stops.AgentStop:
        try:
            while True:
                reply = self.call_model()  # budget, turns and the deadline are checked before the call
                results = [self.use_tool(block) for block in reply if block["type"] == "tool_use"]
                if results:
                    self.messages.append({"role": "user", "content": results})
                else:
                    self.finish_turn()  # the model says it is done: the harness decides with the tests
        except stops.AgentStop as stop:
            stop.record = self.final_record(stop)
            log.info("claude stopped: %s (%s)", type(stop).__name__, stop.summary)
            return stop

    def call_model(self) -> list[dict]:
        usage = self.context.usage
        if len(usage.calls) >= self.settings.max_turns:
            raise stops.TurnLimit(f"used all {self.settings.max_turns} turns (LEVIATHAN_CLAUDE_MAX_TURNS)")
        if self.deadline - time.monotonic() < MIN_CALL_SECONDS:
            raise stops.OutOfTime(f"attempt_timeout_seconds ({self.policy.attempt_timeout_seconds}) reached")
        request = {
            "model": self.settings.model,
            "system": self.system,
            "tools": TOOLS,
            "messages": self.messages,
        }
        encoded = json.dumps(request)
        max_tokens = self.budget.allowance(len(encoded))
        started = time.monotonic()
        reply = self.client.create(deadline=self.deadline, max_tokens=max_tokens, **request)
        content = list(reply.content) or [{"type": "text", "text": "(empty reply)"}]
        self.messages.append({"role": "assistant", "content": content})
        call = CallUsage(
            model=reply.model,
            **reply.usage,
            latency_seconds=round(time.monotonic() - started, 3),
            stop_reason=reply.stop_reason,
            request_sha256=hashlib.sha256(encoded.encode()).hexdigest(),
            request_id=reply.request_id,
        )
        usage.record(call, usd=self.budget.observe(call, len(json.dumps(request))))
        log.info(
            "claude call %d: %d in, %d out, %d cache write, %d cache read, stop %s, %.2fs",
            len(usage.calls), call.input_tokens, call.output_tokens, call.cache_creation_input_tokens,
            call.cache_read_input_tokens, call.stop_reason, call.latency_seconds,
        )  # fmt: skip
        if reply.stop_reason == "refusal":
            raise stops.Refused("the model refused the task")
        return content

    def use_tool(self, block: dict) -> dict:
        name, args = block["name"], block["input"] if isinstance(block["input"], dict) else {}
        log.info("tool %s %s", name, args.get("path", "") if isinstance(args.get("path"), str) else "")
        try:
            if name == "run_tests":
                output = self.describe_tests(self.run_tests())
            elif name in ("list_files", "read_file", "write_file", "replace_in_file"):
                output = getattr(self.workspace, name)(**args)
            else:
                raise ToolError(f"unknown tool {name!r}")
        except PolicyViolation as exc:
            raise stops.ScopeViolation(f"{name}: {exc}") from None
        except (ToolError, TypeError) as exc:  # TypeError: missing or unexpected arguments
            return {"type": "tool_result", "tool_use_id": block["id"], "content": str(exc), "is_error": True}
        return {"type": "tool_result", "tool_use_id": block["id"], "content": output}

    def finish_turn(self) -> None:
        if not self.workspace.written:
            raise stops.NoChanges("the model ended without editing any file")
        if not self.context.test_command:
            raise stops.Done(f"edited {len(self.workspace.written)} file(s); no test command configured")
        tests = self.run_tests()
        if tests.passed:
            raise stops.TestsPassed(f"tests passed after {self.repairs} repair round(s)")
        if self.repairs >= self.policy.max_repair_rounds:
            raise stops.TestsFailed(f"tests still failing after {self.repairs} repair round(s)")
        self.repairs += 1
        feedback = prompts.render(
            "tests_failed.txt",
            exit_code=tests.exit_code,
            round=self.repairs,
            max_repair_rounds=self.policy.max_repair_rounds,
            output=tests.output,
        )
        self.messages.append({"role": "user", "content": feedback})

    def run_tests(self) -> TestRun:
        left = self.deadline - time.monotonic()
        if left < 1:
            raise stops.OutOfTime("no time left to run the tests")
        timeout = min(self.settings.test_timeout_seconds, left)
        self.last_tests = self.workspace.run_tests(
            self.context.test_command, self.context.test_environment, timeout
        )
        return self.last_tests

    @staticmethod
    def describe_tests(run: TestRun) -> str:
        code = "timed out" if run.exit_code is None else f"exit code {run.exit_code}"
        return f"{code}\n{run.output}"

    def final_record(self, stop: stops.AgentStop) -> dict:
        tests = None if self.last_tests is None else ("passed" if self.last_tests.passed else "failed")
        return {
            "stop": type(stop).__name__,
            "turns": len(self.context.usage.calls),
            "repair_rounds": self.repairs,
            "files_written": sorted(self.workspace.written),
            "tests": tests,
            "usage": self.context.usage.summary(),
        }
