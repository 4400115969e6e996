from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices import Usage, calc_price
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenbrake.streams.price import PriceBook
from tokenbrake.streams.price.overrides import Overrides, PriceOverride
from tokenbrake.streams.price.rates import ModelRates, TokenRates, nanos_to_usd

WHEN = datetime(2025, 6, 1, tzinfo=UTC)
WHEN_MS = int(WHEN.timestamp() * 1000)
BOOK = PriceBook()


@pytest.mark.parametrize("provider,model", [
    ("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-3-5-haiku"), ("google", "gemini-2.5-pro"),
])
@pytest.mark.parametrize("inp,out,cached,write", [(1000, 500, 0, 0), (1000, 500, 400, 0), (250_000, 800, 10_000, 500),
                                                  (0, 0, 0, 0), (1, 1, 1, 0)])
def test_matches_genai_prices_exactly(provider, model, inp, out, cached, write):
    ours = BOOK.price(provider, model, WHEN_MS, inp, out, cached, write)
    ref = calc_price(Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=cached, cache_write_tokens=write),
                     model, provider_id=provider, genai_request_timestamp=WHEN)
    assert ours.priced
    assert nanos_to_usd(ours.cost_nanos) == ref.total_price.quantize(Decimal("1e-9"))


def test_cached_tokens_are_priced_once_and_cheaper():
    full = BOOK.price("openai", "gpt-4o", WHEN_MS, 1000, 0)
    half_cached = BOOK.price("openai", "gpt-4o", WHEN_MS, 1000, 0, cached=500)
    # 500 at $2.50/M + 500 at $1.25/M, never 1000 + 500
    assert half_cached.cost_nanos == 500 * 2500 + 500 * 1250
    assert half_cached.cost_nanos < full.cost_nanos


def test_unknown_model_is_never_free_and_flagged():
    call = BOOK.price("openai", "gpt-unknown-9000", WHEN_MS, 1000, 1000)
    assert not call.priced
    assert call.cost_nanos >= BOOK.price("openai", "gpt-4o", WHEN_MS, 1000, 1000).cost_nanos


def test_fallback_model_setting():
    book = PriceBook(fallback_model="openai:gpt-4o-mini")
    call = book.price("acme-ai", "mystery", WHEN_MS, 1_000_000, 0)
    assert not call.priced and call.cost_nanos == 150_000_000  # $0.15 per M input
    with pytest.raises(ValueError):
        PriceBook(fallback_model="nope").check_fallback()


def test_override_wins_and_is_effective_dated():
    entries = [PriceOverride(provider="openai", model="gpt-4o", input_mtok=Decimal("1"), output_mtok=Decimal("2")),
               PriceOverride(provider="openai", model="gpt-4o", input_mtok=Decimal("0.5"), output_mtok=Decimal("1"),
                             effective_from=datetime(2026, 1, 1).date())]
    book = PriceBook(Overrides(entries))
    assert book.price("openai", "gpt-4o", WHEN_MS, 1_000_000, 0).cost_nanos == 1_000_000_000
    assert book.price("openai", "gpt-4o", WHEN_MS + 400 * 86_400_000, 1_000_000, 0).cost_nanos == 500_000_000


def test_override_rejects_float_prices():
    with pytest.raises(ValueError):
        PriceOverride(provider="x", model="y", input_mtok=0.1, output_mtok="1")


@settings(max_examples=300, deadline=None)
@given(inp=st.integers(0, 2_000_000), out=st.integers(0, 200_000), frac=st.floats(0, 1))
def test_cost_is_non_negative_integer_and_monotonic_in_output(inp, out, frac):
    cached = int(inp * frac)
    a = BOOK.price("openai", "gpt-4o", WHEN_MS, inp, out, cached)
    b = BOOK.price("openai", "gpt-4o", WHEN_MS, inp, out + 1, cached)
    assert isinstance(a.cost_nanos, int) and a.cost_nanos >= 0
    assert b.cost_nanos >= a.cost_nanos


def test_tiers_apply_to_all_tokens_above_threshold():
    rates = ModelRates(TokenRates(1000, 2000, 100, 1000), ((200_000, TokenRates(2000, 4000, 200, 2000)),))
    assert rates.cost_nanos(200_000, 0) == 200_000 * 1000 // 10**6
    assert rates.cost_nanos(200_001, 0) == (200_001 * 2000 + 500_000) // 10**6
