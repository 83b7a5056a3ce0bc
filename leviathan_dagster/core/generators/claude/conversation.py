"""The conversation of one attempt and the request built from it: prompt caching and context management.

Caching: four ``cache_control`` breakpoints, the API's maximum. One on the last tool definition and one
on the system prompt (both fixed for the whole attempt, so every call reads them from the cache), and
a moving pair on the last block of the latest message and of the user turn before it: the latest one
writes this turn's prefix, the earlier one finds the previous turn's entry even when a turn appended
more than the API's 20-block lookback. Without them every call re-bills the whole conversation.

Context: past ``clear_after_tokens`` the results of old tool calls (all but the last ``KEEP_RECENT``
user turns) are replaced by a short note, in one sweep so the cached prefix is invalidated once, not
on every turn; the model can run the tool again. Messages are stored without breakpoints; each
request gets fresh copies, so what goes back to the API is the assistant's content verbatim.
"""

from __future__ import annotations

import copy

EPHEMERAL = {"type": "ephemeral"}
KEEP_RECENT = 3
CLEARED = "[tool result cleared by the harness to save context; call the tool again if you need it]"
MIN_CLEARABLE_CHARS = 400
# Blocks the API does not accept cache_control on.
_UNCACHEABLE = {"thinking", "redacted_thinking"}


class Conversation:
    def __init__(self, system: str, tools: list[dict], first: str, clear_after_tokens: int) -> None:
        self.system, self.tools = system, tools
        self.messages: list[dict] = [{"role": "user", "content": [{"type": "text", "text": first}]}]
        self.clear_after_tokens = clear_after_tokens
        self.clears = 0

    def add_assistant(self, content: list[dict]) -> None:
        if self.messages[-1]["role"] == "assistant":  # the continuation of a paused turn: the same turn
            self.messages[-1]["content"].extend(content)
            return
        self.messages.append({"role": "assistant", "content": list(content)})

    def add_user(self, content: str | list[dict]) -> None:
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        self.messages.append({"role": "user", "content": blocks})

    def request(self) -> dict:
        tools = copy.deepcopy(self.tools)
        tools[-1]["cache_control"] = dict(EPHEMERAL)
        messages = copy.deepcopy(self.messages)
        marked = 0
        for message in reversed(messages):
            if marked == 2:
                break
            if message["role"] == "user" or message is messages[-1]:
                marked += _mark_last_cacheable(message)
        return {
            "system": [{"type": "text", "text": self.system, "cache_control": dict(EPHEMERAL)}],
            "tools": tools,
            "messages": messages,
        }

    def maybe_clear(self, conversation_tokens: int) -> int:
        """Clear old tool results when the conversation has grown past the threshold."""
        if conversation_tokens <= self.clear_after_tokens:
            return 0
        return self.clear_old_results(KEEP_RECENT)

    def clear_old_results(self, keep_recent: int) -> int:
        """Replace the content of tool results older than the last ``keep_recent`` user turns."""
        user_turns = [i for i, m in enumerate(self.messages) if m["role"] == "user"]
        cutoff = user_turns[-keep_recent] if len(user_turns) >= keep_recent else 0
        cleared = 0
        for message in self.messages[:cutoff]:
            for block in message["content"] if message["role"] == "user" else ():
                if (
                    block.get("type") == "tool_result"
                    and len(str(block.get("content", ""))) > MIN_CLEARABLE_CHARS
                ):
                    block["content"] = CLEARED
                    cleared += 1
        self.clears += bool(cleared)
        return cleared


def _mark_last_cacheable(message: dict) -> int:
    for block in reversed(message["content"]):
        if block.get("type") not in _UNCACHEABLE:
            block["cache_control"] = dict(EPHEMERAL)
            return 1
    return 0
