"""Event-time buckets: minute, UTC day, UTC calendar month, and rolling durations."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache

MINUTE_MS = 60_000
DAY_MS = 86_400_000


def minute_of(ts_ms: int) -> int:
    return ts_ms // MINUTE_MS


def day_of(ts_ms: int) -> int:
    return ts_ms // DAY_MS


@lru_cache(maxsize=4096)
def month_of_day(day: int) -> int:
    """Months since 1970-01 for a day index (cached: one datetime per day, not per event)."""
    d = datetime.fromtimestamp(day * 86_400, tz=UTC)
    return (d.year - 1970) * 12 + d.month - 1


def month_of(ts_ms: int) -> int:
    return month_of_day(ts_ms // DAY_MS)


def day_label(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%d")


def month_label(month: int) -> str:
    return f"{1970 + month // 12:04d}-{month % 12 + 1:02d}"


def month_start_ms(month: int) -> int:
    return int(datetime(1970 + month // 12, month % 12 + 1, 1, tzinfo=UTC).timestamp() * 1000)


_DURATION = re.compile(r"^(\d+)([mhd])$")
_UNIT_MIN = {"m": 1, "h": 60, "d": 1440}


def parse_duration_minutes(text: str) -> int:
    """``"90m"``, ``"1h"``, ``"7d"`` -> minutes."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"duration {text!r} must look like 30m, 1h or 7d")
    return int(match.group(1)) * _UNIT_MIN[match.group(2)]


def parse_ttl_seconds(text: str) -> int:
    return parse_duration_minutes(text) * 60
