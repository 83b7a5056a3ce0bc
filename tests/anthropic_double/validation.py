"""Request validation of ``POST /v1/messages``, with the real API's rules and error wording.

The point is that a client bug the real API would reject (a ``tool_use`` left without its
``tool_result``, two user turns in a row, a bad tool name) fails the test instead of passing silently.
"""

from __future__ import annotations

import re
from typing import Any

_TOP_LEVEL = {
    "model",
    "max_tokens",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "stream",
    "thinking",
    "service_tier",
    "cache_control",
    "output_config",
}
# Anthropic's client tools (schema-less, defined by type): the name each type must have.
CLIENT_TOOL_NAMES = {
    "text_editor_20250728": "str_replace_based_edit_tool",
    "text_editor_20250429": "str_replace_based_edit_tool",
    "text_editor_20250124": "str_replace_editor",
    "bash_20250124": "bash",
}
MAX_CACHE_BREAKPOINTS = 4
MIN_THINKING_BUDGET = 1024
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_USER_BLOCKS = {"text", "image", "document", "tool_result"}
_ASSISTANT_BLOCKS = {"text", "tool_use", "thinking", "redacted_thinking"}


class RequestInvalid(Exception):
    """Answered with 400 invalid_request_error and this message."""


def validate_request(body: Any) -> None:
    if not isinstance(body, dict):
        raise RequestInvalid("request body must be a JSON object")
    extra = sorted(set(body) - _TOP_LEVEL)
    if extra:
        raise RequestInvalid(f"{extra[0]}: Extra inputs are not permitted")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestInvalid("model: Field required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise RequestInvalid("max_tokens: Input should be a valid integer greater than or equal to 1")
    if body.get("stream"):
        raise RequestInvalid("stream: this double answers non-streaming requests only")
    _validate_system(body.get("system"))
    tool_names = _validate_tools(body.get("tools"))
    _validate_messages(body.get("messages"), tool_names)
    _validate_thinking(body.get("thinking"), max_tokens)
    _validate_cache_control(body)


def _validate_thinking(thinking: Any, max_tokens: int) -> None:
    if thinking is None:
        return
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind not in ("enabled", "disabled", "adaptive", "between_tools"):
        raise RequestInvalid(
            "thinking.type: Input should be 'enabled', 'disabled', 'adaptive' or 'between_tools'"
        )
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < MIN_THINKING_BUDGET:
            raise RequestInvalid(
                "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            )
        if budget >= max_tokens:
            raise RequestInvalid("`max_tokens` must be greater than `thinking.budget_tokens`")


def cacheable_blocks(body: dict) -> list[tuple[str, dict]]:
    """Every block of the prompt in the cache's prefix order: tools, system, messages."""
    blocks = [("tools", tool) for tool in body.get("tools") or []]
    system = body.get("system")
    if isinstance(system, list):
        blocks += [("system", block) for block in system]
    elif isinstance(system, str):
        blocks.append(("system", {"type": "text", "text": system}))
    for message in body["messages"]:
        blocks += [(f"messages.{message['role']}", block) for block in _blocks(message)]
    return blocks


def _validate_cache_control(body: dict) -> None:
    marked = [
        (where, block) for where, block in cacheable_blocks(body) if block.get("cache_control") is not None
    ]
    for where, block in marked:
        control = block["cache_control"]
        if (
            not isinstance(control, dict)
            or control.get("type") != "ephemeral"
            or control.get("ttl", "5m")
            not in (
                "5m",
                "1h",
            )
        ):
            raise RequestInvalid(f"{where}: cache_control: Input should be {{'type': 'ephemeral'}}")
        if block.get("type") in ("thinking", "redacted_thinking"):
            raise RequestInvalid(f"{where}: cache_control cannot be set on a {block['type']} block")
    if len(marked) > MAX_CACHE_BREAKPOINTS:
        raise RequestInvalid(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(marked)}."
        )


def _validate_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list) or any(
        not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"), str)
        for b in system
    ):
        raise RequestInvalid("system: Input should be a valid string or a list of text blocks")


def _validate_tools(tools: Any) -> set[str]:
    if tools is None:
        return set()
    if not isinstance(tools, list):
        raise RequestInvalid("tools: Input should be a valid list")
    names: set[str] = set()
    for index, tool in enumerate(tools):
        where = f"tools.{index}"
        if not isinstance(tool, dict):
            raise RequestInvalid(f"{where}: Input should be an object")
        name = tool.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise RequestInvalid(f"{where}.name: String should match pattern '{_TOOL_NAME.pattern}'")
        if name in names:
            raise RequestInvalid(f"tools: Tool names must be unique ({name!r})")
        kind = tool.get("type", "custom")
        if kind in CLIENT_TOOL_NAMES:
            if name != CLIENT_TOOL_NAMES[kind]:
                raise RequestInvalid(f"{where}.{kind}.name: Input should be '{CLIENT_TOOL_NAMES[kind]}'")
            names.add(name)
            continue
        if kind != "custom":
            raise RequestInvalid(
                f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected tags"
            )
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise RequestInvalid(f"{where}.input_schema.type: Input should be 'object'")
        names.add(name)
    return names


def _blocks(message: dict) -> list[dict]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise RequestInvalid("messages: content must be a non-empty string or list of content blocks")
    if any(not isinstance(block, dict) for block in content):
        raise RequestInvalid("messages: each content block must be an object")
    return content


def _validate_messages(messages: Any, tool_names: set[str]) -> None:
    if not isinstance(messages, list) or not messages:
        raise RequestInvalid("messages: at least one message is required")
    pending_tool_uses: set[str] = set()
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise RequestInvalid(f"messages.{index}.role: Input should be 'user' or 'assistant'")
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise RequestInvalid(
                f"messages: roles must alternate between 'user' and 'assistant', starting with 'user' "
                f"(messages.{index} is {message['role']!r})"
            )
        blocks = _blocks(message)
        allowed = _USER_BLOCKS if expected == "user" else _ASSISTANT_BLOCKS
        for block in blocks:
            if block.get("type") not in allowed:
                raise RequestInvalid(
                    f"messages.{index}: block type {block.get('type')!r} is not allowed in a {expected} turn"
                )
        if expected == "user":
            answered = {b.get("tool_use_id") for b in blocks if b["type"] == "tool_result"}
            if answered - pending_tool_uses:
                raise RequestInvalid(
                    f"messages.{index}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{sorted(answered - pending_tool_uses)}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
            if pending_tool_uses - answered:
                raise RequestInvalid(
                    f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately "
                    f"after: {sorted(pending_tool_uses - answered)}"
                )
            pending_tool_uses = set()
        else:
            for block in blocks:
                if block["type"] == "tool_use":
                    if block.get("name") not in tool_names:
                        raise RequestInvalid(
                            f"messages.{index}: tool_use names unknown tool {block.get('name')!r}"
                        )
                    pending_tool_uses.add(block.get("id"))
    if messages[-1]["role"] == "assistant" and pending_tool_uses:
        raise RequestInvalid("messages: the final assistant turn has tool_use blocks without results")
