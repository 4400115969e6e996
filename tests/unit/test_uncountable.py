"""Why a valid event the engine would not count is dead-lettered: its reason, what to do, and
its bytes (the event as validated)."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from tokenbrake.schemas.usage import UsageEvent
from tokenbrake.streams.ingest.dedupe import Seen
from tokenbrake.streams.runtime.dead_letters import uncountable

SETTINGS = SimpleNamespace(dedupe_horizon="24h", max_future_s=300)
EVENT = UsageEvent.model_validate({"event_id": "e1", "ts": 1_772_400_000_000, "tenant_id": "acme",
                                   "feature_id": "chat", "user_id": "u1", "provider": "openai", "model": "gpt-4o",
                                   "input_tokens": 10, "output_tokens": 2})


def test_a_late_event_names_the_horizon():
    rejected = uncountable(Seen.LATE, EVENT, SETTINGS)
    assert rejected.reason == "late" and "(24h)" in rejected.error and "e1" in rejected.error
    assert orjson.loads(rejected.payload)["event_id"] == "e1"


def test_a_future_event_names_the_setting_and_the_fix():
    rejected = uncountable(Seen.FUTURE, EVENT, SETTINGS)
    assert rejected.reason == "future" and "300s ahead" in rejected.error
    assert "TOKENBRAKE_MAX_FUTURE_S" in rejected.error and "fix the producer's clock" in rejected.error
