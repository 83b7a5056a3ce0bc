"""The attempt's budget, checked before every model call.

Spent tokens are counted as billed: input and output tokens at 1, cache writes at the model's write
multiplier and cache reads at its read multiplier (1.25 and 0.1 for a model without a price), so the
cached prefix an attempt re-reads on every call costs what it is billed, not what it would cost uncached.

The next call's input is the whole conversation, so its size is known up to what was appended since
the last reply: the tokens the API reported for the conversation so far, plus the new characters at a
conservative 3 characters per token (real text and code average more). Its output is bounded by
``max_tokens``, which is lowered to what the budget still allows; when that is less than a useful
reply (``MIN_OUTPUT_TOKENS``) the attempt stops *before* the call, with nothing spent on it.
"""

from __future__ import annotations

import math

from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.generators.claude.prices import PRICES_PER_MILLION, Price, cost_usd, price_for
from leviathan_dagster.core.generators.claude.stops import BudgetExhausted
from leviathan_dagster.core.generators.usage import CallUsage, UsageRecorder
from leviathan_dagster.core.models import Policy

CHARS_PER_TOKEN = 3
MIN_OUTPUT_TOKENS = 1024
STANDARD_WRITE, STANDARD_READ = 1.25, 0.1


class Budget:
    def __init__(self, policy: Policy, usage: UsageRecorder, model: str, max_output_tokens: int) -> None:
        self.max_tokens = policy.max_tokens_per_attempt
        self.max_usd = policy.max_usd_per_attempt
        self.usage, self.max_output_tokens = usage, max_output_tokens
        self.price: Price | None = price_for(model)
        if self.max_usd is not None and self.price is None:
            raise ConfigError(
                f"policy 'max_usd_per_attempt' is set but model {model!r} has no price "
                f"(priced: {', '.join(sorted(PRICES_PER_MILLION))}); use max_tokens_per_attempt instead"
            )
        self._known_tokens = 0
        self._known_chars = 0

    def allowance(self, request_chars: int, wanted: int | None = None) -> int:
        """``max_tokens`` for the next call (``wanted``, default the configured maximum, lowered to what
        the budget allows); BudgetExhausted when it could not fit a useful reply."""
        estimate = self._known_tokens + math.ceil(max(0, request_chars - self._known_chars) / CHARS_PER_TOKEN)
        spent = round(self.usage.billed_tokens or 0)
        left = self.max_tokens - spent - estimate
        detail = (
            f"{spent} billed tokens spent, next input ~{estimate}, max_tokens_per_attempt {self.max_tokens}"
        )
        if self.max_usd is not None and self.price is not None:
            # Budgeted at the dearest rates the request could be billed at: every input token a cache
            # write, and the long-prompt tier where the model has one.
            rates = self.price.highest
            input_price = max(rates.input, rates.cache_write)
            usd_left = self.max_usd - (self.usage.usd or 0.0) - estimate * input_price / 1_000_000
            left = min(left, math.floor(usd_left * 1_000_000 / rates.output))
            detail += f", ${self.usage.usd or 0:.4f} of max_usd_per_attempt ${self.max_usd:g} spent"
        if left < MIN_OUTPUT_TOKENS:
            raise BudgetExhausted(f"budget exhausted before call {len(self.usage.calls) + 1} ({detail})")
        return min(wanted or self.max_output_tokens, left)

    def billed_tokens(self, call: CallUsage) -> float:
        """``call``'s tokens as billed, in input-token equivalents (see the module docstring)."""
        write, read = STANDARD_WRITE, STANDARD_READ
        if self.price is not None:
            rates = self.price.for_prompt(
                call.input_tokens + call.cache_creation_input_tokens + call.cache_read_input_tokens
            )
            write, read = rates.cache_write / rates.input, rates.cache_read / rates.input
        return (
            call.input_tokens
            + call.output_tokens
            + call.cache_creation_input_tokens * write
            + call.cache_read_input_tokens * read
        )

    def observe(self, call: CallUsage, conversation_chars: int) -> float | None:
        """Calibrate on a reply; returns its cost in USD when the model has a price."""
        self._known_tokens = call.total_tokens
        self._known_chars = conversation_chars
        if self.price is None:
            return None
        return cost_usd(
            self.price,
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            cache_write=call.cache_creation_input_tokens,
            cache_read=call.cache_read_input_tokens,
        )
