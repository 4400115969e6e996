"""Field types shared by every event contract."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

#: An identifier: 1-128 characters, no control characters.
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]

#: Events may not be stamped further ahead than this (clock skew allowance).
MAX_FUTURE_SECONDS = 3600
#: Nothing before this is a plausible LLM call.
MIN_TS = datetime(2015, 1, 1, tzinfo=UTC)
_MIN_TS_S = MIN_TS.timestamp()


def _from_epoch_ms(value: int) -> datetime:
    try:
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):  # beyond what a datetime holds (e.g. 10**30)
        raise ValueError(f"epoch milliseconds {str(value)[:30]} out of range") from None


def _parse_ts(value: Any) -> Any:
    # Epoch milliseconds (int) are accepted beside RFC 3339 strings with a zone.
    if value.__class__ is int:  # the common case first (this runs once per event)
        return _from_epoch_ms(value)
    if isinstance(value, bool):
        raise ValueError("timestamp must be RFC 3339 with a zone or epoch milliseconds")
    if isinstance(value, int):
        return _from_epoch_ms(value)
    if isinstance(value, float):
        raise ValueError("epoch timestamps must be integer milliseconds")
    return value


def _check_ts(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp needs a zone (e.g. 2026-11-24T10:00:00Z)")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    seconds = value.timestamp()
    if seconds < _MIN_TS_S:
        raise ValueError(f"timestamp {value.isoformat()} is before {MIN_TS.date()}")
    if seconds > time.time() + MAX_FUTURE_SECONDS:
        raise ValueError(f"timestamp {value.isoformat()} is more than {MAX_FUTURE_SECONDS}s in the future")
    return value


#: A UTC timestamp: RFC 3339 with zone, or epoch milliseconds.
Timestamp = Annotated[datetime, BeforeValidator(_parse_ts), AfterValidator(_check_ts)]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp needs a zone (e.g. 2026-11-24T10:00:00Z)")
    return value.astimezone(UTC)


#: A UTC time that may lie in the future (expiry times).
Deadline = Annotated[datetime, BeforeValidator(_parse_ts), AfterValidator(_aware)]


def no_float(value: Any) -> Any:
    """Reject floats where money is expected (YAML, JSON): quoted decimals only."""
    if isinstance(value, float):
        raise ValueError("money must be a decimal string such as \"0.0123\", never a float")
    return value


def _non_negative(value: Decimal) -> Decimal:
    if not value.is_finite() or value < 0:
        raise ValueError("amount must be a finite, non-negative decimal")
    return value


#: A USD amount: a decimal string (or integer), never a float.
Usd = Annotated[Decimal, BeforeValidator(no_float), AfterValidator(_non_negative)]


def dollars(amount: Decimal) -> str:
    """Money for people: cents from ten cents up (``$1,234.57``, ``$0.80``), up to four decimals
    below (``$0.035``). The events keep the exact value; this is only for reasons and summaries.

    >>> dollars(Decimal("75.001155400")), dollars(Decimal("0.7952")), dollars(Decimal("0.035")), dollars(Decimal(0))
    ('$75.00', '$0.80', '$0.035', '$0')
    """
    if amount == 0:
        return "$0"
    if abs(amount) >= Decimal("0.1"):
        return f"${amount:,.2f}"
    text = f"{amount:.4f}".rstrip("0")
    return "$" + (text + "0" * (2 - len(text.partition(".")[2])))
