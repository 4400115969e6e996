"""What ClickHouse refuses to store, told apart from ClickHouse being unwell.

A value ClickHouse cannot parse or that overflows a column fails its whole insert. The writer
then halves what it was writing until what is refused is single usage events (dead-lettered)
or single rollup totals (left out of the rollups, with an error: the worker's state keeps them
exactly), so one bad value never stops the sink for everyone; any other error is retried.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from clickhouse_connect.driver.exceptions import DataError

from tokenbrake.streams.logs import LogBudget

log = logging.getLogger("tokenbrake.sink")

#: ClickHouse error codes that say "these values cannot be stored" (parsing, conversion,
#: overflow), not "ClickHouse is unwell" (a full disk, a read-only replica, a timeout)
DATA_ERROR_CODES = frozenset({6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 349, 407})


def is_data_error(exc: BaseException) -> bool:
    """Whether ClickHouse refused the values themselves (by its error code).

    >>> is_data_error(RuntimeError("Code: 69. DB::Exception: Decimal value is too big"))
    True
    >>> is_data_error(RuntimeError("Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space"))
    False
    """
    if isinstance(exc, DataError):  # clickhouse-connect could not serialise a value for its column
        return True
    match = re.search(r"Code: (\d+)\b", str(exc))
    return match is not None and int(match.group(1)) in DATA_ERROR_CODES


def halves(items: list[Any]) -> list[list[Any]] | None:
    """``items`` in two halves; None for a single item (it cannot be split)."""
    return None if len(items) == 1 else [items[:len(items) // 2], items[len(items) // 2:]]


def refused_by_halves(insert: Callable[[list[Any]], None], items: list[Any],
                      split: Callable[[list[Any]], list[list[Any]] | None] = halves) -> list[tuple[list[Any], str]]:
    """``insert(items)``; on a data error, each part of ``split(items)`` on its own (the tables
    are idempotent: writing a row again changes nothing), until what is refused cannot be
    split. Returns what was refused, each with ClickHouse's error; any other error is raised."""
    if not items:
        return []
    try:
        insert(items)
        return []
    except Exception as exc:
        if not is_data_error(exc):
            raise
        error = f"{type(exc).__name__}: {exc}"[:4000]
    parts = split(items)
    if parts is None:
        return [(items, error)]
    return [refused for part in parts for refused in refused_by_halves(insert, part, split)]


#: rows left out: a few error lines, then a count of the rest
_left_out = LogBudget(per_window=10, window_s=600.0)


def store_or_leave_out(insert: Callable[[list[Any]], None], items: list[Any], what: str,
                       name: Callable[[Any], str]) -> int:
    """``insert(items)``, leaving out each single item ClickHouse refuses (see
    :func:`refused_by_halves`) with an ERROR naming it (``name(item)``). Returns how many
    were left out."""
    refused = refused_by_halves(insert, items)
    for (item,), error in refused:
        if _left_out.allow():
            log.error("ClickHouse refused %s: left out", what, extra={
                "key": name(item), "error": error[:300], "suppressed": _left_out.take_suppressed()})
    return len(refused)
