"""Spend rollups for ClickHouse, taken from the core's own aggregates.

The core already keeps exact, deduplicated counters per scope and bucket (see
:mod:`streams.aggregate.spend`). The rollup tables store those counters as *absolute
totals* with a version, in ReplacingMergeTree tables: writing a total again (a redelivery,
a restart) changes nothing, and a later total replaces an earlier one. Nothing is
re-aggregated in ClickHouse on the write path, so a flush costs O(keys changed) instead
of a rescan of the minutes it touched.

* ``spend_minute``: one row per tenant, tenant x feature and tenant x model minute
  (``dimension`` = tenant | feature | model, ``value`` = the feature or model, '' for the tenant);
* ``spend_user_day``: one row per tenant x user x UTC day.

A minute older than the core's minute retention has no bucket any more (an event that late
is still counted in its day and month); such minutes are listed in ``stale_minutes`` and
the writer recomputes their rows from ``usage_events``.

Rows are lists of JSON values in the tables' column order (seconds for DateTime, days for
Date, exact decimal text for money): the writer sends them as JSONCompactEachRow, which
ClickHouse parses without holding the worker's GIL.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from streams.price.rates import nanos_to_text

MINUTE_COLUMNS = ["tenant_id", "dimension", "value", "window_start", "requests", "input_tokens", "output_tokens",
                  "cached_input_tokens", "reasoning_tokens", "errors", "retries", "cost_usd", "version"]
USER_DAY_COLUMNS = ["tenant_id", "user_id", "day", "requests", "input_tokens", "output_tokens",
                    "cached_input_tokens", "reasoning_tokens", "errors", "retries", "cost_usd", "version"]
_DIMENSIONS = {"f": "feature", "m": "model"}


def _counters(vec: list[int], version: int) -> tuple[int | str, ...]:
    # vector layout: cost, requests, input, output, cached, reasoning, errors, retries
    return (vec[1], vec[2], vec[3], vec[4], vec[5], vec[6], vec[7], nanos_to_text(vec[0]), version)


def rollup_rows(changes: Iterable[tuple[str, Any, int]], version: int,
                minutes: dict[str, list], user_days: dict[str, list]) -> None:
    """Add the rollup rows for changed aggregate keys to ``minutes`` / ``user_days`` (keyed by
    aggregate key, so a key changed in several batches is written once per flush)."""
    for key, vec, _ in changes:
        if vec is None:  # expired bucket: its last total is already stored
            continue
        head = key[0]
        if head == "m":
            bucket, _, scope = key.partition("|")
            tenant, _, rest = scope[2:].partition("|")
            if not rest:
                dim, value = "tenant", ""
            elif rest[0] in _DIMENSIONS:
                dim, value = _DIMENSIONS[rest[0]], rest[2:]
            else:
                continue  # per-user minutes (rolling user budgets) stay in the core
            minutes[key] = [tenant, dim, value, int(bucket[1:]) * 60, *_counters(vec, version)]
        elif head == "d":
            bucket, _, scope = key.partition("|")
            tenant, _, rest = scope[2:].partition("|")
            if rest.startswith("u="):
                user_days[key] = [tenant, rest[2:], int(bucket[1:]), *_counters(vec, version)]
