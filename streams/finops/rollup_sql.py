"""The hourly and daily rollups: absolute totals recomputed from ``usage_events FINAL``.

Why not an insert-triggered materialized view: ``usage_events`` is a ReplacingMergeTree
keyed by event_id, and a row can be written more than once (a redelivered batch after a
crash, a re-pricing). An insert-triggered view (or an AggregatingMergeTree fed by one) sees
every copy and would count it again; nothing at insert time knows whether the event_id is
already stored.

So every rollup row is an *absolute* total of one (hour, dimensions) group, computed from
``usage_events FINAL`` (one row per event, the latest version), stamped with the time it
was computed as its ``version``, in a ``ReplacingMergeTree(version)``: computing a group
again replaces it, and a group computed twice from the same events is the same row.
Rewriting events (any number of times) and then recomputing their hours gives exact
totals. Readers use ``FINAL``.

Who recomputes:

1. ClickHouse itself: a refreshable materialized view per rollup (``REFRESH EVERY`` the
   ``rollup_refresh_s`` setting) recomputes the last :data:`LOOKBACK_DAYS` days. The worker
   refuses events older than its dedupe horizon (at most 24 h), so every event the worker
   can still write lands in a recomputed hour. The daily view ``DEPENDS ON`` the hourly one.
2. :func:`refresh_range`: the same SELECT over an explicit range (re-pricing, a back-fill
   after the migration, tests). Same text, so one definition of each rollup.

What it costs: each refresh scans ``LOOKBACK_DAYS`` of ``usage_events``; the rollups lag
the events by at most one refresh interval (the live enforcement numbers are the worker's).
A group whose events all disappear (raw TTL) keeps its last rollup row, which is the point
of a rollup outliving its raw events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

#: days recomputed by each automatic refresh (the dedupe horizon is at most 24 h)
LOOKBACK_DAYS = 2

#: the dimensions of both rollups, as stored ('' for an absent optional label)
DIMENSIONS = ["tenant_id", "feature_id", "model", "provider", "environment", "region", "prompt_version",
              "tenant_tier"]
#: additive columns, in table order
MEASURES = ["requests", "billed_requests", "errors", "retries", "semantic_cache_hits", "unpriced_requests",
            "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens",
            "semantic_hit_input_tokens", "semantic_hit_output_tokens", "cost_usd", "failed_cost_usd",
            "retry_cost_usd"]
MONEY = {"cost_usd", "failed_cost_usd", "retry_cost_usd"}

_FROM_EVENTS = {
    "requests": "count()",
    "billed_requests": "countIf(NOT e.cache_hit)",
    "errors": "countIf(e.status != 'ok')",
    "retries": "countIf(e.attempt > 0)",
    "semantic_cache_hits": "countIf(e.cache_hit)",
    "unpriced_requests": "countIf(NOT e.priced)",
    "input_tokens": "sumIf(toUInt64(e.input_tokens), NOT e.cache_hit)",
    "output_tokens": "sumIf(toUInt64(e.output_tokens), NOT e.cache_hit)",
    "cached_input_tokens": "sumIf(toUInt64(e.cached_input_tokens), NOT e.cache_hit)",
    "cache_write_tokens": "sumIf(toUInt64(e.cache_write_tokens), NOT e.cache_hit)",
    "reasoning_tokens": "sumIf(toUInt64(e.reasoning_tokens), NOT e.cache_hit)",
    "semantic_hit_input_tokens": "sumIf(toUInt64(e.input_tokens), e.cache_hit)",
    "semantic_hit_output_tokens": "sumIf(toUInt64(e.output_tokens), e.cache_hit)",
    "cost_usd": "toDecimal64(sum(e.cost_usd), 9)",
    "failed_cost_usd": "toDecimal64(sumIf(e.cost_usd, e.status != 'ok'), 9)",
    "retry_cost_usd": "toDecimal64(sumIf(e.cost_usd, e.attempt > 0), 9)",
}


def table_ddl(db: str, table: str, period_column: str, period_type: str) -> str:
    measures = ",\n    ".join(
        f"{m} {'Decimal(18, 9)' if m in MONEY else 'UInt64'}" for m in MEASURES)
    dims = ",\n    ".join(f"{d} LowCardinality(String)" for d in DIMENSIONS)
    return (f"CREATE TABLE IF NOT EXISTS {db}.{table}\n(\n    {period_column} {period_type},\n    {dims},\n"
            f"    {measures},\n    version UInt64\n)\nENGINE = ReplacingMergeTree(version)\n"
            f"PARTITION BY toYYYYMM({period_column})\nORDER BY ({period_column}, {', '.join(DIMENSIONS)})")


def _hourly_select(db: str, where: str) -> str:
    dims = ", ".join(f"ifNull(toString(e.{d}), '') AS {d}" if d in ("environment", "region", "prompt_version",
                                                                    "tenant_tier") else f"toString(e.{d}) AS {d}"
                     for d in DIMENSIONS)
    measures = ", ".join(f"{_FROM_EVENTS[m]} AS {m}" for m in MEASURES)
    return (f"SELECT toStartOfHour(e.ts) AS hour, {dims}, {measures}, toUnixTimestamp64Nano(now64(9)) AS version "
            f"FROM {db}.usage_events AS e FINAL WHERE {where} GROUP BY hour, {', '.join(DIMENSIONS)}")


def _daily_select(db: str, where: str) -> str:
    measures = ", ".join(f"{'toDecimal64(sum(h.' + m + '), 9)' if m in MONEY else 'sum(h.' + m + ')'} AS {m}"
                         for m in MEASURES)
    return (f"SELECT toDate(h.hour) AS day, {', '.join(DIMENSIONS)}, {measures}, "
            f"toUnixTimestamp64Nano(now64(9)) AS version FROM {db}.usage_hourly AS h FINAL WHERE {where} "
            f"GROUP BY day, {', '.join(DIMENSIONS)}")


_HOURLY_RECENT = f"e.ts >= toStartOfDay(now() - INTERVAL {LOOKBACK_DAYS} DAY)"
_DAILY_RECENT = f"h.hour >= toStartOfDay(now() - INTERVAL {LOOKBACK_DAYS} DAY)"


def refresh_view_ddl(db: str, refresh_s: int) -> list[str]:
    """The refreshable views that keep both rollups current (see the module docstring)."""
    return [
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_hourly_refresh REFRESH EVERY {refresh_s} SECOND "
        f"APPEND TO {db}.usage_hourly AS {_hourly_select(db, _HOURLY_RECENT)}",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_daily_refresh REFRESH EVERY {refresh_s} SECOND "
        f"DEPENDS ON {db}.usage_hourly_refresh APPEND TO {db}.usage_daily AS {_daily_select(db, _DAILY_RECENT)}",
    ]


def refresh_range(client: Any, db: str, start: datetime, end: datetime) -> None:
    """Recompute every hour and day that overlaps [start, end) from usage_events (idempotent).
    Whole days are recomputed, so the daily rows are complete."""
    params = {"lo": start.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds"),
              "hi": end.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")}
    lo, hi = ("toStartOfDay(toDateTime(%(lo)s, 'UTC'))",
              "toStartOfDay(toDateTime(%(hi)s, 'UTC') - INTERVAL 1 SECOND) + INTERVAL 1 DAY")
    client.command(f"INSERT INTO {db}.usage_hourly {_hourly_select(db, f'e.ts >= {lo} AND e.ts < {hi}')}",
                   parameters=params)
    client.command(f"INSERT INTO {db}.usage_daily {_daily_select(db, f'h.hour >= {lo} AND h.hour < {hi}')}",
                   parameters=params)
