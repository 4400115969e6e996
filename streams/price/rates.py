"""Token rates as exact integers: femto-USD (1e-15) per token.

Every catalog price is a Decimal in USD per million tokens with at most 9 decimals, so
``price_mtok * 1e9`` is an exact integer number of femto-USD per token. A call's cost is
summed in femto-USD and rounded once, half-up, to nano-USD (1e-9), the unit stored
everywhere downstream. No float ever touches money.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

FEMTO_PER_NANO = 10**6
NANOS_PER_USD = 10**9


def mtok_to_femto(price_mtok: Decimal) -> int:
    """USD per million tokens -> integer femto-USD per token (exact)."""
    scaled = Decimal(price_mtok) * NANOS_PER_USD
    if scaled != scaled.to_integral_value():
        raise ValueError(f"price {price_mtok} has more than 9 decimals per million tokens")
    return int(scaled)


def nanos_to_usd(nanos: int) -> Decimal:
    return Decimal(nanos).scaleb(-9)


def nanos_to_text(nanos: int) -> str:
    """Exact decimal text of a nano-USD amount ("0.000123456"), as ClickHouse reads a Decimal."""
    sign, nanos = ("-", -nanos) if nanos < 0 else ("", nanos)
    return f"{sign}{nanos // NANOS_PER_USD}.{nanos % NANOS_PER_USD:09d}"


def usd_to_nanos(usd: Decimal) -> int:
    return int((Decimal(usd) * NANOS_PER_USD).to_integral_value())


@dataclass(frozen=True, slots=True)
class TokenRates:
    """femto-USD per token for each kind of token."""

    input: int
    output: int
    cache_read: int
    cache_write: int

    def cost_femto(self, input_tokens: int, output_tokens: int, cached: int, cache_write: int) -> int:
        uncached = input_tokens - cached - cache_write
        return (uncached * self.input + cached * self.cache_read
                + cache_write * self.cache_write + output_tokens * self.output)

    def max(self, other: TokenRates) -> TokenRates:
        return TokenRates(max(self.input, other.input), max(self.output, other.output),
                          max(self.cache_read, other.cache_read), max(self.cache_write, other.cache_write))


@dataclass(frozen=True, slots=True)
class ModelRates:
    """Rates of one model at one time; ``tiers`` apply to *all* tokens once the call's
    input tokens exceed the threshold (the providers' "cliff" pricing)."""

    base: TokenRates
    tiers: tuple[tuple[int, TokenRates], ...] = ()

    def for_input(self, input_tokens: int) -> TokenRates:
        rates = self.base
        for threshold, tier in self.tiers:
            if input_tokens > threshold:
                rates = tier
        return rates

    def cost_nanos(self, input_tokens: int, output_tokens: int, cached: int = 0, cache_write: int = 0) -> int:
        femto = self.for_input(input_tokens).cost_femto(input_tokens, output_tokens, cached, cache_write)
        return (femto + FEMTO_PER_NANO // 2) // FEMTO_PER_NANO
