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

The worker only keeps the changed totals (:func:`keep_totals`: a copy of the counters and
their version per aggregate key); the writer process turns them into rows
as Arrow tables (:func:`streams.sink.arrow_rollups.rollup_tables`: keys split in C++, no
Python per row), or, for a value outside the Arrow types, :func:`rollup_rows`: lists of JSON
values in the tables' column order (seconds for DateTime, days for Date, exact decimal text
for money), sent as JSONCompactEachRow.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tokenbrake.streams.price.rates import nanos_to_text
from tokenbrake.streams.state.keys import DAY, MINUTE, bucket_kind, is_user_scope, parse_bucket_key, parse_scope

MINUTE_COLUMNS = ["tenant_id", "dimension", "value", "window_start", "requests", "input_tokens", "output_tokens",
                  "cached_input_tokens", "reasoning_tokens", "errors", "retries", "cost_usd", "version"]
USER_DAY_COLUMNS = ["tenant_id", "user_id", "day", "requests", "input_tokens", "output_tokens",
                    "cached_input_tokens", "reasoning_tokens", "errors", "retries", "cost_usd", "version"]


def _counters(vec: list[int], version: int) -> tuple[int | str, ...]:
    # vector layout: cost, requests, input, output, cached, reasoning, errors, retries
    return (vec[1], vec[2], vec[3], vec[4], vec[5], vec[6], vec[7], nanos_to_text(vec[0]), version)


#: aggregate key -> (counters, version): the totals the next rollup rows are made of
Totals = dict[str, tuple[list[int], int]]


def keep_totals(changes: Iterable[tuple[str, Any, int]], version: int, totals: Totals) -> None:
    """Keep the changed aggregate totals that have a rollup row (a key changed in several
    chunks is kept, and written, once per flush): tenant, feature and model minutes, and
    user days. The counters are copied: the core adds to its lists in place."""
    for key, vec, _ in changes:
        if vec is None:  # expired bucket: its last total is already stored
            continue
        kind, user = bucket_kind(key), is_user_scope(key)
        if (kind == MINUTE and not user) or (kind == DAY and user):
            totals[key] = (vec[:], version)


def rollup_rows(totals: Totals) -> tuple[list[list], list[list]]:
    """(spend_minute rows, spend_user_day rows) of :func:`keep_totals`' totals."""
    minutes, user_days = [], []
    for key, (vec, version) in totals.items():
        kind, number, scope = parse_bucket_key(key)
        tenant, dimension, value = parse_scope(scope)
        if kind == DAY:
            user_days.append([tenant, value, number, *_counters(vec, version)])
        else:
            minutes.append([tenant, dimension, value, number * 60, *_counters(vec, version)])
    return minutes, user_days
