"""The Anthropic Messages double: a threaded HTTP server on 127.0.0.1 speaking ``POST /v1/messages``.

It validates requests the way the real API does (headers, model, max_tokens, alternating messages,
``tool_result`` blocks answering every ``tool_use`` of the previous turn, tool definitions) and answers
from a per-test script: each entry is a reply dict, a fault (``Status`` for 429/529/5xx with optional
``retry-after``, ``Slow`` to delay past the client's timeout) or a callable that inspects the parsed
request and returns one of those. Every request is recorded in ``requests``; protocol errors the double
had to answer with a 400 are kept in ``errors`` so a test can assert there were none.
"""

from __future__ import annotations

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

from anthropic_double.validation import RequestInvalid, validate_request


@dataclass(frozen=True)
class Status:
    """An error response: 429 rate_limit_error, 529 overloaded_error, 500 api_error, ..."""

    code: int
    retry_after: float | None = None
    message: str = ""


@dataclass(frozen=True)
class Slow:
    """Answer ``then`` only after ``seconds``: longer than the client's timeout makes it give up."""

    seconds: float
    then: Any = None


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def text(value: str) -> dict:
    return {"type": "text", "text": value}


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

    def __init__(self, script: list[Entry] | None = None, *, api_key: str = "sk-ant-double-key") -> None:
        self.script: list[Entry] = list(script or [])
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []
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

    def _message(self, body: dict, scripted: dict) -> dict:
        content = [dict(block) for block in scripted.get("content", [])]
        stop_reason = scripted.get("stop_reason") or (
            "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
        )
        usage = {
            "input_tokens": math.ceil(len(json.dumps(body)) / 4),
            "output_tokens": math.ceil(len(json.dumps(content)) / 4),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            **(scripted.get("usage") or {}),
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
                    self._error(entry.code, entry.message or f"scripted {entry.code}", entry.retry_after)
                    return
                self._send(200, double._message(body, entry))

            def _error(self, code: int, message: str, retry_after: float | None = None) -> None:
                kind = _ERROR_TYPES.get(code, "api_error")
                payload = {"type": "error", "error": {"type": kind, "message": message}}
                headers = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
                self._send(code, payload, headers)

            def _send(self, code: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.send_header("request-id", f"req_double_{uuid.uuid4().hex[:20]}")
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): exactly what a slow-response test provokes

        return Handler
