"""The Anthropic Messages double: a threaded HTTP server on 127.0.0.1 speaking ``POST /v1/messages``.

It validates requests the way the real API does (headers, model, max_tokens, alternating messages,
``tool_result`` blocks answering every ``tool_use`` of the previous turn, tool definitions incl.
Anthropic's typed client tools, cache_control breakpoints, thinking parameters) and answers from a
per-test script: each entry is a reply dict, a fault (``Status`` with the real error envelope, its
``request_id``, ``retry-after``/``retry-after-ms``/``x-should-retry``; ``Slow`` to delay past the
client's timeout) or a callable that inspects the parsed request and returns one of those.

What the real API does and a kind double would not:
- thinking blocks carry a signature; an assistant turn sent back without the thinking blocks of the
  reply it answers, or with one altered, is a 400;
- a reply longer than ``max_tokens`` is cut there (inside a text or a tool_use input, string values
  truncated) with ``stop_reason: max_tokens``; a prompt past ``context_window`` tokens is a 400 "prompt
  is too long", and a reply that would overflow the window stops ``model_context_window_exceeded``;
  a body over ``max_request_bytes`` is a 413 ``request_too_large``;
- prompt caching: a prefix (tools, system, messages, in that order) ending at a ``cache_control``
  breakpoint is written to the cache (``cache_creation_input_tokens``) when at least
  ``min_cacheable_tokens`` long, and a later request whose breakpoint, or one of the 20 blocks before
  it, ends a cached prefix reads it (``cache_read_input_tokens``); only the rest is ``input_tokens``.

Tokens are estimated at 4 bytes of canonical JSON each. Every request is recorded in ``requests``;
protocol errors the double had to answer with a 400 are kept in ``errors`` so a test can assert there
were none.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import itertools
import json
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from anthropic_double.validation import RequestInvalid, cacheable_blocks, validate_request

CACHE_LOOKBACK_BLOCKS = 20
_THINKING_MISSING = (
    "messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{found}`. "
    "When `thinking` is enabled, a final `assistant` message must start with a thinking block "
    "(preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include "
    "thinking blocks from previous turns. To avoid this requirement, disable `thinking`. Please consult "
    "our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)


@dataclass(frozen=True)
class Status:
    """An error response: 429 rate_limit_error, 529 overloaded_error, 402 billing_error, 403
    permission_error, ... ``error_type`` overrides the type the status implies; ``error_code`` adds
    ``error.details.error_code`` (e.g. enforced_spend_limit_reached)."""

    code: int
    retry_after: float | None = None
    message: str = ""
    retry_after_ms: float | None = None
    should_retry: bool | None = None
    error_type: str | None = None
    error_code: str | None = None


@dataclass(frozen=True)
class Slow:
    """Answer ``then`` only after ``seconds``: longer than the client's timeout makes it give up."""

    seconds: float
    then: Any = None


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def thinking(value: str) -> dict:
    """A thinking block; the double signs it when it sends it."""
    return {"type": "thinking", "thinking": value}


def redacted_thinking() -> dict:
    return {"type": "redacted_thinking", "data": base64.b64encode(uuid.uuid4().bytes * 4).decode()}


def tool_use(name: str, **tool_input: Any) -> dict:
    return {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": name, "input": tool_input}


def reply(*blocks: dict, stop_reason: str | None = None, usage: dict | None = None) -> dict:
    """A scripted assistant turn. Without ``usage`` the tokens are estimated from the bytes (4 per token)."""
    return {"content": list(blocks), "stop_reason": stop_reason, "usage": usage}


Entry = dict | Status | Slow | Callable[[dict], Any]


@dataclass
class RecordedRequest:
    body: dict
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)


class AnthropicDouble:
    """Start with ``with AnthropicDouble(script) as api:``; point the SDK at ``api.base_url``."""

    def __init__(
        self,
        script: list[Entry] | None = None,
        *,
        api_key: str = "sk-ant-double-key",
        context_window: int = 200_000,
        max_request_bytes: int = 32_000_000,
        min_cacheable_tokens: int = 1024,
    ) -> None:
        self.script: list[Entry] = list(script or [])
        self.api_key = api_key
        self.context_window, self.max_request_bytes = context_window, max_request_bytes
        self.min_cacheable_tokens = min_cacheable_tokens
        self.requests: list[RecordedRequest] = []
        self.responses: list[dict] = []
        self.errors: list[str] = []
        self._secret = uuid.uuid4().bytes
        self._cache: set[str] = set()
        # tool_use id -> the thinking blocks of the reply that asked for it (exactly as sent)
        self._thinking_by_tool_use: dict[str, list[dict]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> AnthropicDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- answering -------------------------------------------------------------------------------
    def _next_entry(self, body: dict) -> Entry:
        with self._lock:
            self.requests.append(RecordedRequest(body=body, headers={}))
            if not self.script:
                self.errors.append(f"request {len(self.requests)} arrived after the script ended")
                return Status(500, message="the double's script is exhausted")
            return self.script.pop(0)

    # -- the real API's rules ----------------------------------------------------------------------
    def _sign(self, block: dict) -> str:
        return base64.b64encode(
            hmac.new(self._secret, block["thinking"].encode(), "sha256").digest()
        ).decode()

    def check_thinking(self, body: dict) -> None:
        """Thinking blocks must come back verbatim with the turn they belong to (RequestInvalid if not)."""
        for index, message in enumerate(body["messages"]):
            if message["role"] != "assistant" or isinstance(message["content"], str):
                continue
            blocks = [{k: v for k, v in b.items() if k != "cache_control"} for b in message["content"]]
            for position, block in enumerate(blocks):
                if block.get("type") == "thinking" and block.get("signature") != self._sign(block):
                    raise RequestInvalid(
                        f"messages.{index}.content.{position}: Invalid `signature` in `thinking` block"
                    )
            sent = [b for b in blocks if b.get("type") in ("thinking", "redacted_thinking")]
            for block in blocks:
                expected = (
                    self._thinking_by_tool_use.get(block.get("id", ""))
                    if block.get("type") == "tool_use"
                    else None
                )
                if expected and sent != expected:
                    found = blocks[0].get("type")
                    raise RequestInvalid(_THINKING_MISSING.format(index=index, found=found))

    def _prompt_tokens(self, body: dict) -> dict[str, int]:
        """input / cache write / cache read tokens of this prompt, updating the cache."""
        seed = hashlib.sha256(body["model"].encode())
        cumulative, hashes, breakpoints, total = [], [], [], 0
        for index, (_, block) in enumerate(cacheable_blocks(body)):
            plain = {k: v for k, v in block.items() if k != "cache_control"}
            canonical = json.dumps(plain, sort_keys=True, separators=(",", ":"))
            total += math.ceil(len(canonical) / 4)
            seed.update(canonical.encode() + b"\0")
            cumulative.append(total)
            hashes.append(seed.hexdigest())
            if block.get("cache_control") is not None:
                breakpoints.append(index)
        read_end = -1
        for point in breakpoints:
            for j in range(point, max(-1, point - CACHE_LOOKBACK_BLOCKS), -1):
                if hashes[j] in self._cache:
                    read_end = max(read_end, j)
                    break
        read = cumulative[read_end] if read_end >= 0 else 0
        write = 0
        for point in breakpoints:
            if point > read_end and cumulative[point] >= self.min_cacheable_tokens:
                self._cache.add(hashes[point])
                write = cumulative[point] - read
        return {
            "input_tokens": max(0, total - read - write),
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
        }

    def _cut(self, content: list[dict], room: int) -> list[dict]:
        """``content`` cut after ``room`` output tokens, inside the block that crosses the limit."""
        kept, used = [], 0
        for block in content:
            size = math.ceil(len(json.dumps(block)) / 4)
            if used + size <= room:
                kept.append(block)
                used += size
                continue
            chars = max(0, (room - used) * 4)
            cut = copy.deepcopy(block)
            if cut["type"] == "text":
                cut["text"] = cut["text"][:chars]
            elif cut["type"] == "thinking":
                cut["thinking"] = cut["thinking"][:chars]
            elif cut["type"] == "tool_use":  # the input as far as it got: long strings end early
                cut["input"] = {
                    k: v[: chars // 2] if isinstance(v, str) else v for k, v in cut["input"].items()
                }
            kept.append(cut)
            break
        return kept

    def _message(self, body: dict, scripted: dict) -> dict:
        content = [copy.deepcopy(block) for block in scripted.get("content", [])]
        stop_reason = scripted.get("stop_reason") or (
            "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
        )
        prompt = self._prompt_tokens(body)
        prompt_total = sum(prompt.values())
        if prompt_total > self.context_window:
            raise RequestInvalid(f"prompt is too long: {prompt_total} tokens > {self.context_window} maximum")
        output = math.ceil(len(json.dumps(content)) / 4)
        room = min(body["max_tokens"], self.context_window - prompt_total)
        if output > room:
            content = self._cut(content, room)
            stop_reason = "max_tokens" if room == body["max_tokens"] else "model_context_window_exceeded"
            output = room
        for block in content:
            if block["type"] == "thinking":
                block["signature"] = self._sign(block)
        issued = [b for b in content if b["type"] in ("thinking", "redacted_thinking")]
        if issued:
            for block in content:
                if block["type"] == "tool_use":
                    self._thinking_by_tool_use[block["id"]] = copy.deepcopy(issued)
        usage = {**prompt, "output_tokens": output}
        if scripted.get("usage"):  # a test's own counts replace the estimate, cache fields included
            usage = {
                **usage,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                **scripted["usage"],
            }
        return {
            "id": f"msg_double_{next(self._ids):04d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                if length > double.max_request_bytes:
                    self._error(413, "Request exceeds the maximum allowed number of bytes.")
                    return
                if self.path.split("?")[0] != "/v1/messages":
                    self._error(404, f"no route for POST {self.path}")
                    return
                # Older SDKs send x-api-key, newer ones Authorization: Bearer; the API takes both.
                bearer = (self.headers.get("authorization") or "").removeprefix("Bearer ")
                if double.api_key not in (self.headers.get("x-api-key"), bearer):
                    self._error(401, "invalid x-api-key")
                    return
                if not self.headers.get("anthropic-version"):
                    self._error(400, "anthropic-version: header is required")
                    return
                try:
                    body = json.loads(raw)
                    validate_request(body)
                    double.check_thinking(body)
                except (ValueError, RequestInvalid) as exc:
                    double.errors.append(str(exc))
                    self._error(400, str(exc))
                    return
                entry = double._next_entry(body)
                double.requests[-1].headers = {k.lower(): v for k, v in self.headers.items()}
                self._answer(body, entry)

            def _answer(self, body: dict, entry: Entry) -> None:
                if callable(entry) and not isinstance(entry, dict | Status | Slow):
                    try:
                        entry = entry(body)
                    except AssertionError as exc:  # a test's expectation about the request failed
                        double.errors.append(f"request {len(double.requests)}: {exc}")
                        self._error(400, f"the test double's check failed: {exc}")
                        return
                if isinstance(entry, Slow):
                    time.sleep(entry.seconds)
                    entry = entry.then if entry.then is not None else reply(text("late"))
                if isinstance(entry, Status):
                    self._error(entry.code, entry.message or f"scripted {entry.code}", entry)
                    return
                try:
                    message = double._message(body, entry)
                except RequestInvalid as exc:
                    double.errors.append(str(exc))
                    self._error(400, str(exc))
                    return
                double.responses.append(message)
                self._send(200, message)

            def _error(self, code: int, message: str, status: Status | None = None) -> None:
                status = status or Status(code)
                error = {"type": status.error_type or _ERROR_TYPES.get(code, "api_error"), "message": message}
                if status.error_code:
                    error["details"] = {"error_code": status.error_code}
                request_id = f"req_double_{uuid.uuid4().hex[:20]}"
                payload = {"type": "error", "error": error, "request_id": request_id}
                headers = {}
                if status.retry_after is not None:
                    headers["retry-after"] = f"{status.retry_after:g}"
                if status.retry_after_ms is not None:
                    headers["retry-after-ms"] = f"{status.retry_after_ms:g}"
                if status.should_retry is not None:
                    headers["x-should-retry"] = "true" if status.should_retry else "false"
                self._send(code, payload, headers, request_id)

            def _send(
                self,
                code: int,
                payload: dict,
                headers: dict[str, str] | None = None,
                request_id: str | None = None,
            ) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.send_header("request-id", request_id or f"req_double_{uuid.uuid4().hex[:20]}")
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): exactly what a slow-response test provokes

        return Handler
