"""Builders shared by the tests."""

from __future__ import annotations

import itertools
import time
from typing import Any

from schemas.usage import UsageEvent
from streams.decide.policies import parse_policies
from streams.engine import Engine
from streams.price import PriceBook

_ids = itertools.count()
NOW_MS = int(time.time() * 1000) - 6 * 3600 * 1000  # safely in the past, never "in the future"


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
