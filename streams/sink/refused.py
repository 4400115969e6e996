"""What ClickHouse refuses to store, told apart from ClickHouse being unwell.

A value ClickHouse cannot parse or that overflows a column fails its whole insert. The writer
then halves what it was writing until what is refused is single usage events (dead-lettered)
or single rollup totals (left out of the rollups, with an error: the worker's state keeps them
exactly), so one bad value never stops the sink for everyone; any other error is retried.
"""

from __future__ import annotations

import re

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
    match = re.search(r"Code: (\d+)\b", str(exc))
    return match is not None and int(match.group(1)) in DATA_ERROR_CODES
