"""spend_minute and spend_user_day rows as Arrow tables: no key parsed in Python, no JSON.

The JSON path (:func:`streams.sink.rollups.rollup_rows`, then JSONCompactEachRow) parsed
every aggregate key in Python, built a list and a JSON line per row, and ClickHouse parsed
the JSON again. Here the whole flush is a handful of column operations:

* the keys are one Arrow string array, split by one regular expression in C++ (RE2), with
  the same reading as :func:`~streams.state.keys.parse_bucket_key` and
  :func:`~streams.state.keys.parse_scope`: ``{d|m}{number}|t={tenant}[|{f|m|u}={value}]``,
  the tenant up to the first ``|``, the value everything after ``=``;
* the counters are one ``(rows, 8)`` integer matrix (numpy, from the kept lists in C);
  cost is ``decimal128(18, 9)`` whose unscaled integers *are* the nano-dollars (exact, no
  float, no text), as in :mod:`streams.sink.arrow_rows`;
* the minute is ``timestamp[s, UTC]`` (DateTime), the day ``date32`` (Date).

The rows are the same as the JSON path's (``tests/integration/test_arrow_rollups.py`` stores
both and compares every column). What the Arrow types cannot hold exactly (a key in another
shape, a counter below zero or past 64 bits, a cost past Decimal(18, 9), a minute or day
before 1970 or past what DateTime or Date hold) raises one of
:data:`ROLLUP_ARROW_ERRORS`: the caller sends that flush's rollups as JSON instead, where
ClickHouse accepts or refuses them as before, and logs why (one WARNING per reason at most
every few minutes). Any other error (a counter that is not a number: a bug) is raised.
"""

from __future__ import annotations

from operator import itemgetter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenbrake.streams.sink.rollups import MINUTE_COLUMNS, USER_DAY_COLUMNS, Totals
from tokenbrake.streams.state.keys import ROLLUP_KEY_PATTERN

#: the letter of a scope's second part ('' for the tenant) -> the dimension column
_LETTERS = pa.array(["", "f", "m", "u"])
_DIMENSIONS = pa.array(["tenant", "feature", "model", "user"])
_COST = pa.decimal128(18, 9)
_COST_LIMIT = 10**18  # unscaled: 18 digits
_MINUTE_LIMIT = 2**32 // 60  # DateTime: seconds in an unsigned 32-bit integer
_DAY_LIMIT = 2**16  # Date: days in an unsigned 16-bit integer
#: counters after cost, in the tables' column order (vector layout: cost, requests, input,
#: output, cached, reasoning, errors, retries)
_COUNTER_COLUMNS = ["requests", "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens",
                    "errors", "retries"]


class RollupOutOfRange(ValueError):
    """A value the Arrow types would not hold as the JSON path writes it."""


#: what a value outside the Arrow types raises (found by trying each one; see
#: tests/integration/test_arrow_rollups.py), and only that, so a bug is not hidden by the JSON
#: path: OverflowError (a counter or version past 64 bits, a version below zero), ArrowInvalid
#: (a minute or day number past 64 bits), RollupOutOfRange (the checks below)
ROLLUP_ARROW_ERRORS = (pa.ArrowInvalid, OverflowError, RollupOutOfRange)


def _counter_columns(totals: Totals) -> dict[str, pa.Array]:
    values = totals.values()
    vectors = list(map(itemgetter(0), values))
    try:
        matrix = np.array(vectors, dtype=np.int64)  # OverflowError past 64 bits
    except ValueError as exc:  # numpy's word for vectors of different lengths, and for a counter not a number
        if len(set(map(len, vectors))) > 1:
            raise RollupOutOfRange("counter vectors of different lengths") from exc
        raise
    if matrix.ndim != 2 or matrix.shape[1] < 8:
        raise RollupOutOfRange("a counter vector without 8 counters")
    by_column = np.ascontiguousarray(matrix[:, :8].T)  # one row per counter (contiguous: fast into Arrow)
    cost_nanos = by_column[0]
    if by_column[1:].min() < 0 or cost_nanos.min() <= -_COST_LIMIT or cost_nanos.max() >= _COST_LIMIT:
        raise RollupOutOfRange("a counter below zero or a cost beyond Decimal(18, 9)")
    counters = by_column[1:].view(np.uint64)
    columns = {name: pa.array(counters[i]) for i, name in enumerate(_COUNTER_COLUMNS)}
    cost = pa.array(cost_nanos).cast(pa.decimal128(38, 0))  # unscaled nano-dollars
    columns["cost_usd"] = pa.Array.from_buffers(_COST, len(cost), cost.buffers())  # the same integers, scale 9
    columns["version"] = pa.array(list(map(itemgetter(1), values)), pa.uint64())  # refuses < 0 and past 64 bits
    return columns


def rollup_tables(totals: Totals) -> tuple[pa.Table, pa.Table]:
    """(spend_minute, spend_user_day) of :func:`~streams.sink.rollups.keep_totals`' totals,
    columns in ``MINUTE_COLUMNS`` / ``USER_DAY_COLUMNS`` order, rows in the totals' order;
    ``totals`` is not empty."""
    parts = pc.extract_regex(pa.array(list(totals), pa.string()), ROLLUP_KEY_PATTERN)  # no match: JSON path
    if parts.null_count:
        raise RollupOutOfRange("an aggregate key in another shape")
    columns = _counter_columns(totals)
    columns["tenant_id"] = parts.field("tenant")
    columns["value"] = parts.field("value")
    columns["dimension"] = _DIMENSIONS.take(pc.index_in(parts.field("letter"), value_set=_LETTERS))
    number = parts.field("number").cast(pa.int64())
    is_day = pc.equal(parts.field("kind"), "d")
    all_rows = pa.table(columns)
    days, minutes = all_rows.filter(is_day), all_rows.filter(pc.invert(is_day))
    day_numbers, minute_numbers = number.filter(is_day), number.filter(pc.invert(is_day))
    if (len(minute_numbers) and pc.max(minute_numbers).as_py() >= _MINUTE_LIMIT) or \
            (len(day_numbers) and pc.max(day_numbers).as_py() >= _DAY_LIMIT):
        raise RollupOutOfRange("a minute or day beyond DateTime or Date")  # the JSON path: ClickHouse decides
    minutes = minutes.append_column("window_start", pc.multiply(minute_numbers, 60).cast(pa.timestamp("s", tz="UTC")))
    days = days.rename_columns(["user_id" if name == "value" else name for name in days.column_names])
    days = days.append_column("day", day_numbers.cast(pa.int32()).cast(pa.date32()))
    return minutes.select(MINUTE_COLUMNS), days.select(USER_DAY_COLUMNS)
