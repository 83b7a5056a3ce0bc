"""The price table: exact ids only, every model of the installed SDK priced or deliberately unpriced,
per-model cache multipliers and Haiku 5.5's prompt-length tier."""

from __future__ import annotations

import typing

import pytest
from anthropic.types import Model

from leviathan_dagster.core.generators.claude.prices import (
    PRICES_PER_MILLION,
    UNPRICED,
    cost_usd,
    price_for,
)


def sdk_model_names() -> set[str]:
    literal = next(arg for arg in typing.get_args(Model) if typing.get_origin(arg) is typing.Literal)
    return set(typing.get_args(literal))


def test_every_model_of_the_sdk_is_priced_or_deliberately_unpriced() -> None:
    names = sdk_model_names()
    assert len(names) > 10  # the SDK's Literal was found, not an empty set
    forgotten = sorted(names - set(PRICES_PER_MILLION) - set(UNPRICED))
    assert forgotten == [], f"add these to PRICES_PER_MILLION or UNPRICED: {forgotten}"
    assert not set(PRICES_PER_MILLION) & set(UNPRICED)


def test_prices_are_by_exact_id_never_by_prefix() -> None:
    assert price_for("claude-opus-4-7").input == 5.0  # a prefix match gave Opus 4.0's $15
    assert price_for("claude-opus-4-20250514").input == 15.0
    assert price_for("claude-opus-4-7-20990101") is None
    assert price_for("claude-sonnet-4-6-experimental") is None
    assert price_for("gpt-4") is None


@pytest.mark.parametrize(
    ("model", "read_multiplier"),
    [
        ("claude-sonnet-4-6", 0.1),
        ("claude-opus-4-8", 0.1),
        ("claude-fable-5", 0.1),
        ("claude-fable-5-1", 0.025),
        ("claude-fable-5-2", 0.025),
        ("claude-mythos-5-1", 0.025),
        ("claude-sonnet-5-5", 0.05),
        ("claude-opus-5-5", 0.05),
    ],
)
def test_cache_multipliers_are_per_model(model: str, read_multiplier: float) -> None:
    price = price_for(model)
    assert price.cache_read == pytest.approx(price.input * read_multiplier)
    assert price.cache_write == pytest.approx(price.input * 1.25)


def test_cost_counts_cache_reads_and_writes_at_their_rates() -> None:
    price = price_for("claude-sonnet-4-6")  # $3 in, $15 out, $3.75 write, $0.30 read
    usd = cost_usd(price, input_tokens=1_000, output_tokens=2_000, cache_write=10_000, cache_read=100_000)
    assert usd == pytest.approx((3_000 + 30_000 + 37_500 + 30_000) / 1_000_000)


def test_haiku_5_5_bills_a_long_prompt_at_the_higher_tier_on_every_token() -> None:
    price = price_for("claude-haiku-5-5")
    short = cost_usd(price, input_tokens=50_000, output_tokens=1_000, cache_read=50_000)
    assert short == pytest.approx((50_000 * 0.10 + 1_000 * 0.50 + 50_000 * 0.01) / 1_000_000)
    long = cost_usd(price, input_tokens=50_000, output_tokens=1_000, cache_read=50_001)
    assert long == pytest.approx((50_000 * 0.50 + 1_000 * 2.50 + 50_001 * 0.05) / 1_000_000)
    assert price.highest.output == 2.50
