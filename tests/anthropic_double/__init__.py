"""A wire-level double of the Anthropic Messages API (``POST /v1/messages``) for the real SDK."""

from anthropic_double.server import (
    AnthropicDouble,
    Slow,
    Status,
    redacted_thinking,
    reply,
    text,
    thinking,
    tool_use,
)

__all__ = ["AnthropicDouble", "Slow", "Status", "redacted_thinking", "reply", "text", "thinking", "tool_use"]
