"""Re-pricing: recompute the cost of stored events from their tokens with the prices in
force now (a negotiated discount, a corrected catalog entry), and rewrite every table that
carries money for the range.

Steps, one UTC day at a time (a day's rows are held in memory at once):

1. read the day's ``usage_events FINAL`` and price every event again with the given
   :class:`PriceBook` (a semantic cache hit stays at 0, as the worker prices it);
2. write back only the rows whose cost or ``priced`` flag changed (``usage_events`` is a
   ReplacingMergeTree keyed by event_id: the row written last replaces the old one);
3. once every day is done, recompute the rollups of the range from ``usage_events``:
   ``usage_hourly``/``usage_daily`` (:func:`rollup_sql.refresh_range`) and the worker's
   ``spend_minute``/``spend_user_day`` (absolute totals with a newer version).

Idempotent: a second run with the same prices changes no event and writes the same totals.
A run cut short is finished by running it again (step 1 reads what step 2 already wrote).

What it does not change: the worker's in-memory totals for periods still open (today's and
this month's budgets). Re-price closed periods, or update ``TOKENBRAKE_PRICE_OVERRIDES_PATH``
and restart the worker first, so that the worker's own later writes agree with the new
prices (a redelivered old message would otherwise be written with the worker's price).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tokenbrake.streams.finops import rollup_sql
from tokenbrake.streams.price import PriceBook
from tokenbrake.streams.price.rates import nanos_to_usd, usd_to_nanos


@dataclass
class RepriceResult:
    events: int = 0
    changed: int = 0
    old_total_usd: Decimal = Decimal(0)
    new_total_usd: Decimal = Decimal(0)


def _days(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    out, day = [], start
    while day < end:
        out.append((day, min(day + timedelta(days=1), end)))
        day += timedelta(days=1)
    return out


def reprice(client: Any, db: str, pricebook: PriceBook, start: datetime, end: datetime) -> RepriceResult:
    """Re-price [start, end) (see the module docstring); returns counts and old/new totals."""
    result = RepriceResult()
    ingested = datetime.now(UTC).replace(tzinfo=None)
    for lo, hi in _days(start, end):
        query = client.query(f"SELECT * FROM {db}.usage_events FINAL WHERE ts >= %(lo)s AND ts < %(hi)s",
                             parameters={"lo": lo.replace(tzinfo=None), "hi": hi.replace(tzinfo=None)})
        columns = list(query.column_names)
        col = {name: i for i, name in enumerate(columns)}
        changed = []
        for row in query.result_rows:
            old = Decimal(row[col["cost_usd"]])
            if row[col["cache_hit"]]:
                nanos, priced = 0, True
            else:
                ts_ms = int(row[col["ts"]].replace(tzinfo=UTC).timestamp() * 1000)
                call = pricebook.price(row[col["provider"]], row[col["model"]], ts_ms, row[col["input_tokens"]],
                                       row[col["output_tokens"]], row[col["cached_input_tokens"]],
                                       row[col["cache_write_tokens"]], row[col["model_version"]])
                nanos, priced = call.cost_nanos, call.priced
            result.events += 1
            result.old_total_usd += old
            result.new_total_usd += nanos_to_usd(nanos)
            if usd_to_nanos(old) != nanos or bool(row[col["priced"]]) != priced:
                new = list(row)
                new[col["cost_usd"]], new[col["priced"]] = nanos_to_usd(nanos), priced
                new[col["ingested_at"]] = ingested
                changed.append(new)
        if changed:
            client.insert(f"{db}.usage_events", changed, column_names=columns)
            result.changed += len(changed)
    rollup_sql.refresh_range(client, db, start, end)
    _rebuild_worker_rollups(client, db, start, end)
    return result


def _rebuild_worker_rollups(client: Any, db: str, start: datetime, end: datetime) -> None:
    """spend_minute and spend_user_day of the range again from usage_events (whole days)."""
    params = {"lo": start.replace(tzinfo=None), "hi": end.replace(tzinfo=None), "v": time.time_ns()}
    client.command(
        f"INSERT INTO {db}.spend_minute SELECT tenant_id, d.1 AS dimension, d.2 AS value, "
        "toStartOfMinute(ts) AS window_start, count(), sum(input_tokens), sum(output_tokens), "
        "sum(cached_input_tokens), sum(reasoning_tokens), countIf(status != 'ok'), countIf(attempt > 0), "
        f"sum(cost_usd), %(v)s FROM {db}.usage_events FINAL "
        "ARRAY JOIN [('tenant', ''), ('feature', toString(feature_id)), ('model', toString(model))] AS d "
        "WHERE ts >= %(lo)s AND ts < %(hi)s GROUP BY tenant_id, dimension, value, window_start", parameters=params)
    client.command(
        f"INSERT INTO {db}.spend_user_day SELECT tenant_id, user_id, toDate(ts) AS day, count(), sum(input_tokens), "
        "sum(output_tokens), sum(cached_input_tokens), sum(reasoning_tokens), countIf(status != 'ok'), "
        f"countIf(attempt > 0), sum(cost_usd), %(v)s FROM {db}.usage_events FINAL "
        "WHERE ts >= toStartOfDay(toDateTime(%(lo)s)) AND ts < toStartOfDay(toDateTime(%(hi)s) - INTERVAL 1 SECOND) "
        "+ INTERVAL 1 DAY GROUP BY tenant_id, user_id, day", parameters=params)
