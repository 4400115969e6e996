"""The fallback price of an unknown model is the provider's highest price in force at the event's
time, not at the wall clock's (a backtest of old events uses old prices)."""

from tokenbrake.streams.price import PriceBook

OLD_MS = 1_680_000_000_000  # 2023-03-28
NEW_MS = 1_780_000_000_000  # 2026-05-28


def test_the_fallback_follows_the_event_time_in_either_order():
    book = PriceBook()
    new_first = (book.fallback_rates("deepseek", NEW_MS), book.fallback_rates("deepseek", OLD_MS))
    other = PriceBook()
    old_first = (other.fallback_rates("deepseek", NEW_MS), other.fallback_rates("deepseek", OLD_MS))
    assert new_first == old_first  # no price of the first call cached for later ones
    assert new_first[0] != new_first[1]  # deepseek's prices changed between the two dates
    call = book.price("deepseek", "deepseek-unknown-9", OLD_MS, 1_000_000, 0)
    assert not call.priced and call.cost_nanos == new_first[1].cost_nanos(1_000_000, 0, 0, 0)
