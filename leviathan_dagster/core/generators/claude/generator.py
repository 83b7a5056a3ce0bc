"""ClaudeGenerator: Claude edits the workspace with Anthropic's own tools, checked by the harness.

``AgentRun.run`` is the whole agent: call the model (limits checked first), act on the reply by its
``stop_reason``, run the tools it asked for, and when it stops asking, let the harness run the tests
and feed failures back, at most ``max_repair_rounds`` times. Every ending is an ``AgentStop``. Only
counts and hashes are recorded, never a prompt or a response.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from leviathan_dagster.core.generators.base import GenerationContext, Generator
from leviathan_dagster.core.generators.claude import prompts, stops
from leviathan_dagster.core.generators.claude.bash import SandboxedBash, bash_unavailable_reason
from leviathan_dagster.core.generators.claude.commands import TestRun, run_tests
from leviathan_dagster.core.generators.claude.conversation import Conversation
from leviathan_dagster.core.generators.claude.settings import MIN_THINKING_BUDGET
from leviathan_dagster.core.generators.claude.toolbox import MAX_REFUSED_WRITES, Toolbox
from leviathan_dagster.core.generators.claude.tools import ScopedWorkspace
from leviathan_dagster.core.generators.usage import CallUsage
from leviathan_dagster.core.models import GeneratedChange, Task

log = logging.getLogger("leviathan.claude")
MIN_CALL_SECONDS = 5.0
INTERLEAVED_THINKING_BETA = "interleaved-thinking-2025-05-14"


class ClaudeGenerator(Generator):
    name = "claude"

    def __init__(self, settings=None) -> None:
        # Imported here: the SDK takes seconds to import, and only an attempt that uses Claude needs it.
        from leviathan_dagster.core.generators.claude.client import ClaudeClient, ClaudeSettings

        self.settings = settings or ClaudeSettings.from_environ()
        self.client = ClaudeClient(self.settings)

    def generate(
        self, task: Task, workspace: Path, context: GenerationContext | None = None
    ) -> GeneratedChange:
        try:
            run = AgentRun(self, task, workspace, context or GenerationContext())
            stop = run.run()
        finally:
            self.client.close()
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
        from leviathan_dagster.core.generators.claude.budget import Budget

        self.settings, self.client, self.context = generator.settings, generator.client, context
        self.policy = context.policy
        self.deadline = context.deadline or time.monotonic() + self.policy.attempt_timeout_seconds
        self.workspace = ScopedWorkspace(workspace, task.allowed_paths, self.policy.allowed_path_prefixes)
        self.budget = Budget(self.policy, context.usage, self.settings.model, self.settings.max_output_tokens)
        self.bash_unavailable = bash_unavailable_reason()
        bash = (
            None
            if self.bash_unavailable
            else SandboxedBash(self.workspace, context, self.settings, self.deadline)
        )
        self.tools = Toolbox(self.workspace, self.tests_tool, bash.run if bash else None)
        allowed = list(task.allowed_paths)
        system = prompts.render(
            "system.txt",
            allowed_paths=allowed,
            test_command=" ".join(context.test_command),
            max_repair_rounds=self.policy.max_repair_rounds,
            bash=bash is not None,
        )
        first = prompts.render_task(task, allowed_paths=allowed)
        self.conversation = Conversation(
            system, self.tools.definitions(), first, self.settings.context_clear_tokens
        )
        digest = hashlib.sha256(f"{system}\0{first}".encode()).hexdigest()
        context.usage.describe(
            model=self.settings.model, template_version=prompts.template_version(), prompt_sha256=digest
        )
        context.usage.note(
            tools=[tool["name"] for tool in self.tools.definitions()],
            bash="sandboxed" if bash else f"not offered: {self.bash_unavailable}",
            thinking=str(self.settings.thinking or "model default"),
        )
        self.repairs, self.last_tests, self.truncations = 0, None, 0
        self.room: int | None = None  # max_tokens wanted after a truncated reply
        self.last_max_tokens = 0
        self.output_limit = self.settings.max_output_tokens_ceiling

    def run(self) -> stops.AgentStop:
        try:
            while True:
                reply = self.call_model()  # budget, turns and the deadline are checked before the call
                self.act_on(reply)
        except stops.AgentStop as stop:
            stop.record = self.final_record(stop)
            log.info("claude stopped: %s (%s)", type(stop).__name__, stop.summary)
            return stop

    def act_on(self, reply) -> None:
        reason = reply.stop_reason
        if reason == "max_tokens":  # cut short: never run a tool call from it, ask again with more room
            return self.ask_for_more_room()
        if reason == "model_context_window_exceeded":
            return self.make_room("the reply filled the model's context window")
        if reason == "refusal":
            raise stops.Refused("the model refused the task (stop_reason refusal)")
        self.room = None
        self.conversation.add_assistant(list(reply.content))  # verbatim: thinking blocks and signatures
        if reason == "pause_turn":  # the API paused a long turn: sending it back lets the model go on
            return None
        tool_uses = [block for block in reply.content if block.get("type") == "tool_use"]
        if not tool_uses:  # end_turn or stop_sequence: the model says it is done
            return self.finish_turn()
        self.conversation.add_user([self.tools.use(block) for block in tool_uses])
        if self.tools.refused_writes >= MAX_REFUSED_WRITES:
            raise stops.ScopeViolation(
                f"{self.tools.refused_writes} writes outside the allowed paths refused"
            )
        return None

    def call_model(self):
        from leviathan_dagster.core.generators.claude.client import MaxTokensTooHigh, RequestTooLarge

        usage = self.context.usage
        if len(usage.calls) >= self.settings.max_turns:
            raise stops.TurnLimit(f"used all {self.settings.max_turns} turns (LEVIATHAN_CLAUDE_MAX_TURNS)")
        if self.deadline - time.monotonic() < MIN_CALL_SECONDS:
            raise stops.OutOfTime(f"attempt_timeout_seconds ({self.policy.attempt_timeout_seconds}) reached")
        request = {"model": self.settings.model, **self.conversation.request()}
        encoded = json.dumps(request)
        max_tokens = min(self.budget.allowance(len(encoded), self.room), self.output_limit)
        if self.room is not None and max_tokens <= self.last_max_tokens:
            raise stops.Truncated(
                f"the reply was cut at max_tokens {self.last_max_tokens} and the budget allows no more"
            )
        extra = self.thinking(request, max_tokens)
        started = time.monotonic()
        try:
            reply = self.client.create(deadline=self.deadline, max_tokens=max_tokens, **request, **extra)
        except RequestTooLarge as exc:
            self.make_room(str(exc))
            return self.call_model()
        except MaxTokensTooHigh as exc:
            # Below what was asked (a cut reply asked again with more room, or the configured maximum):
            # the model's own limit becomes the ceiling; the next call stops as truncated if it cannot grow.
            if exc.limit >= max_tokens:
                raise
            self.output_limit = exc.limit
            return self.call_model()
        self.last_max_tokens = max_tokens
        call = CallUsage(
            model=reply.model,
            **reply.usage,
            latency_seconds=round(time.monotonic() - started, 3),
            stop_reason=reply.stop_reason,
            request_sha256=hashlib.sha256(encoded.encode()).hexdigest(),
            request_id=reply.request_id,
        )
        usage.record(
            call, usd=self.budget.observe(call, len(encoded)), billed_tokens=self.budget.billed_tokens(call)
        )
        log.info(
            "claude call %d: %d in, %d out, %d cache write, %d cache read, stop %s, %.2fs",
            len(usage.calls), call.input_tokens, call.output_tokens, call.cache_creation_input_tokens,
            call.cache_read_input_tokens, call.stop_reason, call.latency_seconds,
        )  # fmt: skip
        self.conversation.maybe_clear(call.total_tokens)
        return reply

    def thinking(self, request: dict, max_tokens: int) -> dict:
        """The ``thinking`` parameter (and the interleaved-thinking beta for a manual budget)."""
        setting = self.settings.thinking
        if setting is None:
            return {}  # the model's default; thinking blocks that come back are kept all the same
        if setting == "adaptive":
            return {"thinking": {"type": "adaptive"}}
        if setting == "off":
            return {"thinking": {"type": "disabled"}}
        budget = max(MIN_THINKING_BUDGET, min(int(setting), max_tokens - MIN_THINKING_BUDGET))
        if budget >= max_tokens:
            raise stops.BudgetExhausted(f"max_tokens {max_tokens} leaves no room for the thinking budget")
        return {
            "thinking": {"type": "enabled", "budget_tokens": budget},
            "extra_headers": {"anthropic-beta": INTERLEAVED_THINKING_BETA},
        }

    def ask_for_more_room(self) -> None:
        self.truncations += 1
        ceiling = self.output_limit
        if self.last_max_tokens >= ceiling:
            raise stops.Truncated(f"the reply was cut at max_tokens {self.last_max_tokens} (the ceiling)")
        self.room = min(ceiling, self.last_max_tokens * 2)

    def make_room(self, why: str) -> None:
        if not self.conversation.clear_old_results(keep_recent=1):
            raise stops.ContextFull(f"{why}; nothing left to clear")
        log.info("context cleared: %s", why)

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
        self.conversation.add_user(feedback)

    def tests_tool(self) -> str:
        run = self.run_tests()
        code = "timed out" if run.exit_code is None else f"exit code {run.exit_code}"
        return f"{code}\n{run.output}"

    def run_tests(self) -> TestRun:
        left = self.deadline - time.monotonic()
        if left < 1:
            raise stops.OutOfTime("no time left to run the tests")
        timeout = min(self.settings.test_timeout_seconds, left)
        self.last_tests = run_tests(
            self.workspace, self.context.test_command, self.context.test_environment, timeout
        )
        return self.last_tests

    def final_record(self, stop: stops.AgentStop) -> dict:
        tests = None if self.last_tests is None else ("passed" if self.last_tests.passed else "failed")
        self.context.usage.note(
            stop=type(stop).__name__,
            tool_calls=dict(self.tools.calls),
            refused=dict(self.tools.refusals),
            truncated_replies=self.truncations,
            context_clears=self.conversation.clears,
        )
        return {
            "stop": type(stop).__name__,
            "turns": len(self.context.usage.calls),
            "repair_rounds": self.repairs,
            "files_written": sorted(self.workspace.written),
            "tests": tests,
            "tool_calls": dict(self.tools.calls),
            "refused": dict(self.tools.refusals),
            "bash": "offered (sandboxed)"
            if not self.bash_unavailable
            else f"not offered: {self.bash_unavailable}",
            "thinking": self.settings.thinking if self.settings.thinking is not None else "model default",
            "truncated_replies": self.truncations,
            "context_clears": self.conversation.clears,
            "usage": self.context.usage.summary(),
        }
