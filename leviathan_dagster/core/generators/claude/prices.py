"""Claude list prices in USD per million tokens, for ``max_usd_per_attempt`` and the cost benchmark.

Keyed by the **exact** model id the API is called with (aliases and dated ids both), never by a name
prefix: a prefix match priced Opus 4.7 at Opus 4.0's $15/$75 and a new family at nothing. Each row
carries its own cache prices, because the multipliers are not uniform: Fable 5.2, Fable 5.1 and Mythos
5.1 bill cache hits at 0.025x input, Opus 5.5 and Sonnet 5.5 (since 2026-10-07) at 0.05x, the others at
0.1x; 5-minute cache writes are 1.25x input everywhere (the generator never asks for the 1-hour TTL).
Claude Haiku 5.5 is priced by prompt length: a request whose prompt (input + cache reads + cache
writes) exceeds 100,000 tokens pays the higher rates on every token of that request, output included.

A model missing here cannot be given a USD budget: the generator refuses to start rather than guess.
``UNPRICED`` names the ids of the installed SDK's ``Model`` type that are left out on purpose, with why,
so a test can tell a deliberate gap from a forgotten one when the SDK adds a model.

Source: platform.claude.com/docs/en/about-claude/pricing and the per-model overview pages (read
2026-12-01). Update this table when the price list changes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    """USD per million tokens. ``long_prompt``: the rates of a request whose prompt exceeds
    ``long_prompt_threshold`` tokens (Haiku 5.5), applied to the whole request."""

    input: float
    output: float
    cache_write: float  # 5-minute TTL
    cache_read: float
    long_prompt_threshold: int | None = None
    long_prompt: Price | None = None

    def for_prompt(self, prompt_tokens: int) -> Price:
        threshold = self.long_prompt_threshold
        if self.long_prompt is not None and threshold is not None and prompt_tokens > threshold:
            return self.long_prompt
        return self

    @property
    def highest(self) -> Price:
        """The rates a not-yet-sent request must be budgeted at (its prompt length is an estimate)."""
        return self.long_prompt or self


def _standard(input_price: float, output_price: float, cache_read: float | None = None) -> Price:
    read = input_price * 0.1 if cache_read is None else cache_read
    return Price(input_price, output_price, input_price * 1.25, read)


_OPUS_4_5_TO_5 = _standard(5.0, 25.0)
_OPUS_4_0 = _standard(15.0, 75.0)
_SONNET_4 = _standard(3.0, 15.0)
_HAIKU_4_5 = _standard(1.0, 5.0)
_FABLE_5 = _standard(10.0, 50.0, cache_read=1.0)
_FABLE_5_1 = _standard(10.0, 50.0, cache_read=0.25)

PRICES_PER_MILLION: dict[str, Price] = {
    "claude-fable-5-2": _standard(8.0, 40.0, cache_read=0.20),
    "claude-fable-5-1": _FABLE_5_1,
    "claude-mythos-5-1": _FABLE_5_1,  # shares Fable 5.1's price list
    "claude-fable-5": _FABLE_5,
    "claude-mythos-5": _FABLE_5,
    "claude-opus-5-5": _standard(4.0, 20.0, cache_read=0.20),
    "claude-opus-5": _OPUS_4_5_TO_5,
    "claude-opus-4-8": _OPUS_4_5_TO_5,
    "claude-opus-4-7": _OPUS_4_5_TO_5,
    "claude-opus-4-6": _OPUS_4_5_TO_5,
    "claude-opus-4-5": _OPUS_4_5_TO_5,
    "claude-opus-4-5-20251101": _OPUS_4_5_TO_5,
    "claude-opus-4-1": _OPUS_4_0,
    "claude-opus-4-1-20250805": _OPUS_4_0,
    "claude-opus-4-0": _OPUS_4_0,
    "claude-opus-4-20250514": _OPUS_4_0,
    "claude-sonnet-5-5": _standard(2.0, 10.0, cache_read=0.10),
    "claude-sonnet-5": _standard(2.0, 10.0),
    "claude-sonnet-4-6": _SONNET_4,
    "claude-sonnet-4-5": _SONNET_4,
    "claude-sonnet-4-5-20250929": _SONNET_4,
    "claude-sonnet-4-0": _SONNET_4,
    "claude-sonnet-4-20250514": _SONNET_4,
    "claude-haiku-5-5": Price(
        0.10,
        0.50,
        0.125,
        0.01,
        long_prompt_threshold=100_000,
        long_prompt=Price(0.50, 2.50, 0.625, 0.05),
    ),
    "claude-haiku-4-5": _HAIKU_4_5,
    "claude-haiku-4-5-20251001": _HAIKU_4_5,
}

# Ids of the SDK's Model type deliberately without a price: no public list price to copy.
UNPRICED: dict[str, str] = {
    "claude-mythos-preview": "research preview by invitation; no public list price",
    "claude-mythos-5-2": "limited availability; no public list price at the time of writing",
}


def price_for(model: str) -> Price | None:
    """The exact model id's price, or None (no guess from a similar name)."""
    return PRICES_PER_MILLION.get(model)


def cost_usd(
    price: Price, *, input_tokens: int, output_tokens: int, cache_write: int = 0, cache_read: int = 0
) -> float:
    rates = price.for_prompt(input_tokens + cache_write + cache_read)
    return (
        input_tokens * rates.input
        + output_tokens * rates.output
        + cache_write * rates.cache_write
        + cache_read * rates.cache_read
    ) / 1_000_000
