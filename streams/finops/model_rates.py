"""Catalog rates in ClickHouse, so SQL can price what was not billed (cache savings).

One row per provider, model and UTC day seen in ``usage_daily``: the base-tier USD per
token of each kind in force at the start of that day, from the same :class:`PriceBook` the
worker prices with (overrides, then the genai-prices catalog; an unknown model gets the
fallback rates and ``priced = false``). Tiered ("cliff") prices above a call-size threshold
are not applied to these derived figures: a saving is priced at the base tier.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from tokenbrake.streams.price import PriceBook
from tokenbrake.streams.price.rates import TokenRates

FEMTO = Decimal(1).scaleb(-15)
RATE_COLUMNS = ["provider", "model", "day", "input_usd", "output_usd", "cache_read_usd", "cache_write_usd", "priced",
                "version"]


def usd_per_token(femto: int) -> Decimal:
    return Decimal(femto) * FEMTO


def day_rates(pricebook: PriceBook, provider: str, model: str, day: date) -> tuple[TokenRates, bool]:
    ts_ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    rates = pricebook.rates(provider, model, ts_ms)
    if rates is None:
        return pricebook.fallback_rates(provider, ts_ms).base, False
    return rates.base, True


def sync_rates(client: Any, db: str, pricebook: PriceBook, start: date, end: date) -> int:
    """Write the rates of every (provider, model, day) in usage_daily with start <= day < end, and
    of the models asked for before a downgrade;
    returns the rows written (idempotent: the latest write wins)."""
    seen = client.query(
        f"SELECT DISTINCT provider, model, day FROM {db}.usage_daily WHERE day >= %(lo)s AND day < %(hi)s "
        f"UNION DISTINCT SELECT DISTINCT toString(provider), assumeNotNull(requested_model), toDate(ts) "
        f"FROM {db}.usage_events WHERE requested_model IS NOT NULL AND ts >= %(lo)s AND ts < %(hi)s",
        parameters={"lo": start, "hi": end}).result_rows
    version = time.time_ns()
    rows = []
    for provider, model, day in seen:
        rates, priced = day_rates(pricebook, provider, model, day)
        rows.append([provider, model, day, usd_per_token(rates.input), usd_per_token(rates.output),
                     usd_per_token(rates.cache_read), usd_per_token(rates.cache_write), priced, version])
    if rows:
        client.insert(f"{db}.model_rates", rows, column_names=RATE_COLUMNS)
    return len(rows)
