"""Builders shared by the tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from tokenbrake.schemas.usage import UsageEvent
from tokenbrake.streams.decide.policies import parse_policies
from tokenbrake.streams.engine import Engine
from tokenbrake.streams.price import PriceBook

_ids = itertools.count()


def _mid_month_noon_ms() -> int:
    """Noon UTC on the 15th of this month, or of the previous one while that is under 6 h away: in the
    past (never "in the future"), and a day or more from any day or month boundary, so a test that
    moves event time by minutes or a day never crosses midnight or a month end by the host's date."""
    now = datetime.now(UTC)
    noon = now.replace(day=15, hour=12, minute=0, second=0, microsecond=0)
    if now - noon < timedelta(hours=6):
        noon = (noon.replace(day=1) - timedelta(days=1)).replace(day=15)
    return int(noon.timestamp() * 1000)


NOW_MS = _mid_month_noon_ms()


def event(**kw: Any) -> UsageEvent:
    base: dict[str, Any] = {
        "event_id": f"e{next(_ids)}", "ts": NOW_MS, "tenant_id": "acme", "feature_id": "chat", "user_id": "u1",
        "provider": "openai", "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 100,
    }
    base.update(kw)
    return UsageEvent(**base)


def engine(policies_yaml: str = "", **kw: Any) -> Engine:
    return Engine(parse_policies(policies_yaml), kw.pop("pricebook", None) or PriceBook(), **kw)


# gpt-4o: $2.50 / M input, $10 / M output -> 1000 in + 100 out = $0.0035
GPT4O_CALL_NANOS = 3_500_000
