"""Claude list prices in USD per million tokens, for ``max_usd_per_attempt``.

Matched by model-name prefix, longest first (``claude-opus-4-5`` before ``claude-opus-4``), so dated
snapshots (``claude-sonnet-4-20250514``) find their family. Cache writes (5-minute) cost 1.25x input
and cache reads 0.1x input. A model missing here cannot be given a USD budget: the generator refuses
to start rather than guess a price.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    input: float
    output: float

    @property
    def cache_write(self) -> float:
        return self.input * 1.25

    @property
    def cache_read(self) -> float:
        return self.input * 0.1


PRICES_PER_MILLION: dict[str, Price] = {
    "claude-opus-4-5": Price(5.0, 25.0),
    "claude-opus-4-6": Price(5.0, 25.0),
    "claude-opus-4": Price(15.0, 75.0),
    "claude-sonnet-4": Price(3.0, 15.0),
    "claude-3-7-sonnet": Price(3.0, 15.0),
    "claude-haiku-4-5": Price(1.0, 5.0),
    "claude-3-5-haiku": Price(0.8, 4.0),
}


def price_for(model: str) -> Price | None:
    for prefix in sorted(PRICES_PER_MILLION, key=len, reverse=True):
        if model.startswith(prefix):
            return PRICES_PER_MILLION[prefix]
    return None


def cost_usd(
    price: Price, *, input_tokens: int, output_tokens: int, cache_write: int = 0, cache_read: int = 0
) -> float:
    return (
        input_tokens * price.input
        + output_tokens * price.output
        + cache_write * price.cache_write
        + cache_read * price.cache_read
    ) / 1_000_000
