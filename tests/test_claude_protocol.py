"""The Messages protocol as the API defines it, through the real SDK against the double: thinking kept
verbatim, every stop_reason, context management, caching breakpoints, and errors by their type."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import anthropic
import pytest
from anthropic_double import AnthropicDouble, Status, redacted_thinking, reply, text, thinking, tool_use
from test_claude_generator import MODEL, edit, generate

from leviathan_dagster.core.attempts import lifecycle
from leviathan_dagster.core.attempts.ledger import AttemptLedger
from leviathan_dagster.core.attempts.operator import TARGET_RESUMED, operator_event
from leviathan_dagster.core.errors import GeneratorError, TransientError
from leviathan_dagster.core.events.ndjson.store import NdjsonEventLog
from leviathan_dagster.core.generators.base import GenerationStopped
from leviathan_dagster.core.generators.claude.conversation import CLEARED
from leviathan_dagster.core.models import Backlog, Policy, TargetConfig, Task
from leviathan_dagster.core.scheduling.readiness import MODEL_ACCOUNT, evaluate_target

NEW_FILE = "def slugify(text):\n    return text.lower().replace(' ', '-')\n"


def test_thinking_blocks_go_back_verbatim_with_the_budget_and_the_interleaving_beta(tmp_path: Path) -> None:
    hidden = redacted_thinking()

    def sees_its_thinking(body: dict):
        assistant = body["messages"][1]["content"]
        assert [b["type"] for b in assistant] == ["thinking", "redacted_thinking", "tool_use"], assistant
        assert assistant[0]["thinking"] == "Look first." and assistant[0]["signature"]
        assert assistant[1] == hidden
        return reply(thinking("Now write."), edit("create", path="lib/textutil.py", file_text=NEW_FILE))

    first = reply(thinking("Look first."), hidden, edit("view", path="lib/textutil.py"))
    script = [first, sees_its_thinking]
    script.append(reply(text("done")))
    with AnthropicDouble(script) as api:
        change, _ = generate(tmp_path, api, thinking=2048)
    assert api.errors == [] and change.files == ("lib/textutil.py",)
    first = api.requests[0]
    assert first.body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert first.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"


def test_the_double_rejects_a_turn_sent_back_without_its_thinking() -> None:
    with AnthropicDouble([reply(thinking("secret plan"), tool_use("find_files", pattern="*.py"))]) as api:
        client = anthropic.Anthropic(api_key=api.api_key, base_url=api.base_url, max_retries=0)
        tools = [{"name": "find_files", "input_schema": {"type": "object", "properties": {}}}]
        ask = [{"role": "user", "content": "go"}]
        message = client.messages.create(model=MODEL, max_tokens=4000, messages=ask, tools=tools)
        [plan, call] = message.content
        assert plan.type == "thinking" and plan.signature
        answer = {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "a.py"}],
        }
        stripped = {"role": "assistant", "content": [call.to_dict()]}
        with pytest.raises(anthropic.BadRequestError, match="must start with a thinking block"):
            client.messages.create(model=MODEL, max_tokens=10, messages=[*ask, stripped, answer], tools=tools)
        forged = {"role": "assistant", "content": [{**plan.to_dict(), "thinking": "other"}, call.to_dict()]}
        with pytest.raises(anthropic.BadRequestError, match="Invalid `signature`"):
            client.messages.create(model=MODEL, max_tokens=10, messages=[*ask, forged, answer], tools=tools)
        client.close()


def test_a_reply_cut_inside_a_tool_call_is_never_executed_and_is_asked_again_with_more_room(
    tmp_path: Path,
) -> None:
    long_file = "# " + "x" * 70 + "\n"
    long_file *= 150  # ~11,000 characters: ~2,800 output tokens
    big = reply(edit("create", path="lib/textutil.py", file_text=long_file))
    workspace_file = tmp_path / "ws/lib/textutil.py"

    def not_written_yet(body: dict):
        assert "x" * 70 not in workspace_file.read_text()  # the cut create never ran
        return big

    with AnthropicDouble([big, not_written_yet, not_written_yet, reply(text("done"))]) as api:
        change, context = generate(tmp_path, api, max_output_tokens=1024)
    assert api.errors == [] and change.files == ("lib/textutil.py",)
    assert workspace_file.read_text() == long_file  # written whole, from the reply that fit
    assert [r.body["max_tokens"] for r in api.requests] == [1024, 2048, 4096, 1024]
    stops = [c.stop_reason for c in context.usage.calls]
    assert stops == ["max_tokens", "max_tokens", "tool_use", "end_turn"]
    assert change.details["truncated_replies"] == 2


def test_a_reply_still_cut_at_the_ceiling_stops_as_truncated_and_writes_nothing(tmp_path: Path) -> None:
    big = reply(edit("create", path="lib/textutil.py", file_text="y" * 20_000))
    with AnthropicDouble([big, big]) as api, pytest.raises(GenerationStopped) as stopped:
        generate(tmp_path, api, max_output_tokens=1024, max_output_tokens_ceiling=2048)
    assert stopped.value.failure_type == "budget_exhausted" and "max_tokens 2048" in stopped.value.summary
    assert "y" * 100 not in (tmp_path / "ws/lib/textutil.py").read_text()


def test_pause_turn_sends_the_paused_turn_back_to_continue(tmp_path: Path) -> None:
    def continues(body: dict):
        last = body["messages"][-1]
        assert last["role"] == "assistant" and last["content"][0]["text"] == "Working on it.", last
        return reply(edit("create", path="lib/textutil.py", file_text=NEW_FILE))

    script = [reply(text("Working on it."), stop_reason="pause_turn"), continues, reply(text("done"))]
    with AnthropicDouble(script) as api:
        change, _ = generate(tmp_path, api)
    assert api.errors == [] and change.files == ("lib/textutil.py",)


def test_refusal_ends_the_attempt_without_running_anything(tmp_path: Path) -> None:
    script = [reply(edit("create", path="lib/textutil.py", file_text="x"), stop_reason="refusal")]
    with AnthropicDouble(script) as api, pytest.raises(GenerationStopped) as stopped:
        generate(tmp_path, api)
    assert stopped.value.failure_type == "executor_error" and "refusal" in stopped.value.summary
    assert (tmp_path / "ws/lib/textutil.py").read_text().startswith("def slugify(text):\n    return text\n")


def test_a_full_context_window_clears_old_tool_results_and_goes_on(tmp_path: Path) -> None:
    (tmp_path / "ws/lib").mkdir(parents=True)
    (tmp_path / "ws/lib/big.py").write_text("# " + "z" * 8_000 + "\n")  # ~2,000 tokens when viewed

    def sees_cleared(body: dict):
        results = [b for m in body["messages"] if m["role"] == "user" for b in m["content"]]
        assert any(b.get("content") == CLEARED for b in results), results
        return reply(edit("create", path="lib/textutil.py", file_text=NEW_FILE))

    script = [
        reply(edit("view", path="lib/big.py")),
        reply(edit("view", path="lib/textutil.py")),
        reply(text("w" * 12_000)),  # overflows the window: model_context_window_exceeded
        sees_cleared,
        reply(text("done")),
    ]
    with AnthropicDouble(script, context_window=5_000) as api:
        change, context = generate(tmp_path, api, max_output_tokens=4096)
    assert api.errors == [] and change.files == ("lib/textutil.py",)
    assert context.usage.calls[2].stop_reason == "model_context_window_exceeded"
    assert change.details["context_clears"] == 1


def test_a_prompt_too_long_with_nothing_to_clear_stops_as_context_full(tmp_path: Path) -> None:
    too_long = Status(400, message="prompt is too long: 212000 tokens > 200000 maximum")
    with AnthropicDouble([too_long]) as api, pytest.raises(GenerationStopped) as stopped:
        generate(tmp_path, api)
    assert (
        stopped.value.failure_type == "budget_exhausted" and "nothing left to clear" in stopped.value.summary
    )
    assert len(api.requests) == 1


def test_every_request_carries_four_cache_breakpoints_and_the_double_bills_the_cache(tmp_path: Path) -> None:
    script = [reply(edit("view", path="lib/textutil.py")), reply(edit("view", path="lib/textutil.py"))]
    script += [reply(edit("create", path="lib/textutil.py", file_text=NEW_FILE)), reply(text("done"))]
    with AnthropicDouble(script, min_cacheable_tokens=256) as api:
        _, context = generate(tmp_path, api)
    assert api.errors == []
    for recorded in api.requests:
        body = recorded.body
        marks = [t for t in body["tools"] if "cache_control" in t] + [
            b for b in body["system"] if "cache_control" in b
        ]
        marks += [b for m in body["messages"] for b in m["content"] if "cache_control" in b]
        assert len(marks) == min(4, 2 + (len(body["messages"]) + 1) // 2)
    calls = context.usage.calls
    assert calls[0].cache_creation_input_tokens > 0 and calls[0].cache_read_input_tokens == 0
    # From the second call on, everything before the newest turn is read from the cache.
    assert all(
        c.cache_read_input_tokens > 3 * c.input_tokens + c.cache_creation_input_tokens for c in calls[1:]
    )


@pytest.mark.parametrize(
    "status",
    [
        Status(402, message="Your credit balance is too low to access the Anthropic API."),
        Status(403, message="Your API key does not have permission to use the specified resource."),
        Status(400, message="Workspace spend limit reached.", error_code="enforced_spend_limit_reached"),
        Status(429, message="Monthly spend limit reached.", error_code="contract_spend_limit_reached"),
    ],
    ids=["billing", "permission", "spend-limit-400", "spend-limit-429"],
)
def test_account_errors_are_never_retried_and_stop_as_model_account(tmp_path: Path, status: Status) -> None:
    with AnthropicDouble([status, reply(text("unused"))]) as api, pytest.raises(GenerationStopped) as stopped:
        generate(tmp_path, api)
    assert len(api.requests) == 1
    assert stopped.value.failure_type == "model_account"
    assert (
        f"HTTP {status.code}" in stopped.value.summary and "request-id req_double_" in stopped.value.summary
    )
    assert status.message in stopped.value.summary


def test_retry_after_ms_and_x_should_retry_are_honoured(tmp_path: Path) -> None:
    script = [
        Status(429, retry_after_ms=20),
        Status(408),
        Status(400, should_retry=True, message="transient"),
        reply(edit("create", path="lib/textutil.py", file_text=NEW_FILE)),
        reply(text("done")),
    ]
    with AnthropicDouble(script) as api:
        change, _ = generate(tmp_path, api)
    assert len(api.requests) == 5 and change.files == ("lib/textutil.py",)
    not_now = AnthropicDouble([Status(529, should_retry=False), reply(text("x"))])
    with not_now as api, pytest.raises(TransientError, match="529 overloaded_error"):
        generate(tmp_path / "second", api)
    assert len(api.requests) == 1


def test_other_invalid_requests_are_generator_errors_with_the_api_message(tmp_path: Path) -> None:
    bad = AnthropicDouble([Status(400, message="tools.0.name: bad")])
    with bad as api, pytest.raises(GeneratorError, match="invalid_request_error.*tools.0.name: bad"):
        generate(tmp_path, api)
    with (
        AnthropicDouble([Status(413, message="Request exceeds the maximum allowed number of bytes.")]) as api,
        pytest.raises(GenerationStopped, match="nothing left to clear"),
    ):
        generate(tmp_path / "second", api)


def test_a_model_account_failure_pauses_the_target_until_resumed_and_never_counts(tmp_path: Path) -> None:
    ids = {"target_id": "t", "task_id": "a"}
    log = NdjsonEventLog(tmp_path / "events.ndjson")
    created = lifecycle.attempt_created(
        attempt_id="a1", attempt_number=1, branch_name="b", executor="local", actor_id="x", **ids
    )
    failed = lifecycle.attempt_failed(
        attempt_id="a1",
        failure_type="model_account",
        error_summary="HTTP 402 billing_error",
        actor_id="x",
        **ids,
    )
    log.append([created, failed])
    target = TargetConfig(id="t", repo_url="x", policy=Policy(circuit_breaker_failures=1, max_open_prs=5))
    tasks = (
        Task(id="a", title="a", ready=True, allowed_paths=("docs/a.md",), generator="claude"),
        Task(id="b", title="b", ready=True, allowed_paths=("docs/b.md",), generator="docs"),
    )
    ledger = AttemptLedger.from_events(log.read())
    assert not ledger.attempt("a1").counts_against_task and ledger.task("t", "a").counted_attempts == 0
    now = ledger.attempt("a1").ended_at + timedelta(days=1)  # past any backoff
    results = evaluate_target(target, Backlog("b", tasks), ledger, [], now)
    assert {r.reason for r in results} == {MODEL_ACCOUNT}  # not circuit_open: the failure did not count
    assert "HTTP 402 billing_error" in results[0].detail and "leviathan target resume t" in results[0].detail
    log.append([operator_event(TARGET_RESUMED, "alice", target_id="t", reason="topped up")])
    resumed = evaluate_target(target, Backlog("b", tasks), AttemptLedger.from_events(log.read()), [], now)
    assert [r.reason for r in resumed] == ["ready", "max_running_attempts"]  # one slot, taken by a


def test_without_a_sandbox_bash_is_not_offered_and_the_record_says_why(tmp_path: Path, monkeypatch) -> None:
    from leviathan_dagster.core.sandbox import sandbox_problem

    monkeypatch.setenv("LEVIATHAN_BWRAP", str(tmp_path / "no-bwrap"))
    sandbox_problem.cache_clear()
    script = [reply(edit("create", path="lib/textutil.py", file_text=NEW_FILE)), reply(text("done"))]
    try:
        with AnthropicDouble(script) as api:
            change, context = generate(tmp_path, api)
    finally:
        sandbox_problem.cache_clear()  # the next test probes the real machine again
    names = [tool["name"] for tool in api.requests[0].body["tools"]]
    assert "bash" not in names and "str_replace_based_edit_tool" in names
    assert change.details["bash"].startswith("not offered: bubblewrap (bwrap) is not installed")
    assert context.usage.summary()["agent"]["bash"] == change.details["bash"]  # in the attempt's events
    assert "no shell" in api.requests[0].body["system"][0]["text"]


def test_more_room_stops_at_the_models_own_output_limit(tmp_path: Path) -> None:
    long_file = ("# " + "q" * 70 + "\n") * 150  # ~2,800 output tokens
    big = reply(edit("create", path="lib/textutil.py", file_text=long_file))
    with (
        AnthropicDouble([big, big, big], max_output_tokens=2_500) as api,
        pytest.raises(GenerationStopped) as stopped,
    ):
        generate(tmp_path, api, max_output_tokens=1024)
    # 1024 cut, 2048 cut, 4096 refused by the API (over the model's 2,500), 2,500 still cut: truncated.
    assert [r.body["max_tokens"] for r in api.requests] == [1024, 2048, 2500]  # the 400 is not scripted
    assert api.errors[0].startswith("max_tokens: 4096 > 2500") and len(api.errors) == 1
    assert stopped.value.failure_type == "budget_exhausted" and "max_tokens 2500" in stopped.value.summary
