"""Token accounting for model calls: per call and per attempt, counts and hashes only.

Never a prompt or a response: what is kept is how many tokens, which model, how long, why it stopped,
and the SHA-256 of what was sent, so a call can be matched to a prompt kept elsewhere without this
record ever holding its text.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


@dataclass(frozen=True)
class CallUsage:
    """One model call."""

    model: str
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    latency_seconds: float
    stop_reason: str | None
    request_sha256: str
    request_id: str | None = None

    @property
    def total_tokens(self) -> int:
        return sum(getattr(self, name) for name in TOKEN_FIELDS)


class UsageRecorder:
    """Collects the calls of one attempt; with ``path``, rewrites ``usage.json`` after every call
    (atomically), so a worker killed mid-attempt leaves a readable record of what it had spent."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.calls: list[CallUsage] = []
        self.model: str | None = None
        # The generator that made (or made no) calls: a deterministic one records zero calls, explicitly.
        self.generator: str | None = None
        self.template_version: str | None = None
        self.prompt_sha256: str | None = None
        self.usd: float | None = None
        # Input-token equivalents billed (cache writes and reads at the model's rates): what the token
        # budgets count, so a cached prefix read on every call is not counted as if sent anew.
        self.billed_tokens: float | None = None
        # What the agent had and did (tools offered, bash or why not, refusals, stop): counts and names only.
        self.agent: dict = {}
        self._lock = threading.Lock()

    def describe(self, *, model: str, template_version: str, prompt_sha256: str) -> None:
        self.model, self.template_version, self.prompt_sha256 = model, template_version, prompt_sha256
        self._flush()

    def for_generator(self, name: str) -> None:
        """Name the attempt's generator (docs, tests, claude): the record says whose calls these are."""
        self.generator = name
        self._flush()

    def note(self, **facts: object) -> None:
        """Add facts about the attempt's agent to the record (never a prompt or a response)."""
        with self._lock:
            self.agent.update(facts)
        self._flush()

    def record(
        self, call: CallUsage, *, usd: float | None = None, billed_tokens: float | None = None
    ) -> None:
        with self._lock:
            self.calls.append(call)
            if usd is not None:
                self.usd = round((self.usd or 0.0) + usd, 6)
            if billed_tokens is not None:
                self.billed_tokens = (self.billed_tokens or 0.0) + billed_tokens
        self._flush()

    def total(self, name: str) -> int:
        return sum(getattr(call, name) for call in self.calls)

    @property
    def total_tokens(self) -> int:
        return sum(call.total_tokens for call in self.calls)

    def summary(self) -> dict:
        """Per-attempt totals: what goes into the attempt's events (``usage``)."""
        summary: dict = {
            "generator": self.generator,
            "calls": len(self.calls),
            **{name: self.total(name) for name in TOKEN_FIELDS},
            "total_tokens": self.total_tokens,
            "model": self.model,
            "template_version": self.template_version,
            "prompt_sha256": self.prompt_sha256,
        }
        if self.usd is not None:
            summary["usd"] = self.usd
        if self.billed_tokens is not None:
            summary["billed_tokens"] = round(self.billed_tokens)
        if self.agent:
            summary["agent"] = dict(self.agent)
        return summary

    def _flush(self) -> None:
        if self.path is None:
            return
        with self._lock:
            data = {**self.summary(), "per_call": [asdict(call) for call in self.calls]}
            temporary = self.path.with_name(self.path.name + ".tmp")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(temporary, self.path)
