"""The writer builds usage rows from the message bytes and what the engine computed
(``UsageSource``), not from the validated events: the rows must say exactly what the
validated events say, also where the contract coerces or fills in values."""

from __future__ import annotations

import re
from decimal import Decimal

import orjson

from tokenbrake.schemas.usage import UsageEvent
from tokenbrake.streams.engine import PricedEvent
from tokenbrake.streams.ingest.decode import decode
from tokenbrake.streams.sink.clickhouse import (
    DDL_PATH,
    USAGE_INSERT_COLUMNS,
    priced_entry,
    ts_text,
    usage_rows,
    usage_source_bytes,
)

TS = 1_764_000_000_123
BASE = {"ts": TS, "tenant_id": "acme", "feature_id": "chat", "user_id": "u1", "provider": "openai",
        "model": "gpt-4o", "input_tokens": 100, "output_tokens": 10}


def table_columns(table: str) -> list[str]:
    body = DDL_PATH.read_text().split(f"{{db}}.{table}", 1)[1].split("ENGINE", 1)[0]
    return re.findall(r"^\s+(\w+)\s+\S", body, flags=re.MULTILINE)


def expected(ev: UsageEvent, cost: int, ingested: str) -> list:
    row = {**ev.model_dump(), "ts": ts_text(TS), "logical_call_id": ev.call_id,
            "reported_cost_usd": None if ev.reported_cost_usd is None else format(ev.reported_cost_usd, "f"),
            "cost_usd": f"{Decimal(cost) / 10**9:.9f}", "priced": True, "ingested_at": ingested}
    return [row[name] for name in USAGE_INSERT_COLUMNS]


def rows_of(value: bytes, good: list[UsageEvent], bad: bool = False) -> tuple[list[list], list[list]]:
    priced = [PricedEvent(ev, TS, 1_500_000 + i, True, True) for i, ev in enumerate(good)]
    source = (usage_source_bytes(good) if bad else value, "1764000000.500", [priced_entry(p) for p in priced])
    return usage_rows(source), [expected(p.event, p.cost_nanos, "1764000000.500") for p in priced]


def test_rows_from_the_message_equal_the_validated_events():
    value = orjson.dumps([
        {**BASE, "event_id": "plain"},  # every optional field left to its default
        {**BASE, "event_id": "coerced", "cache_hit": "true", "reported_cost_usd": "1e-3", "attempt": 2,
         "logical_call_id": "call-9", "status": "timeout", "latency_ms": 40, "cached_input_tokens": 20,
         "environment": "prod", "model_version": "2024-08-06", "tenant_tier": "gold"},
        {**BASE, "event_id": "integer-money", "reported_cost_usd": 2, "cache_hit": 0},
    ])
    good, bad = decode(value)
    assert not bad and good[1].cache_hit is True and good[2].reported_cost_usd == 2
    rows, want = rows_of(value, good)
    assert rows == want
    assert sorted(USAGE_INSERT_COLUMNS) == sorted(table_columns("usage_events"))  # each column, once
    row = dict(zip(USAGE_INSERT_COLUMNS, rows[1], strict=True))
    assert row["cache_hit"] is True and row["reported_cost_usd"] == "0.001" and row["attempt"] == 2


def test_a_single_event_message():
    value = orjson.dumps({**BASE, "event_id": "one"})
    good, _ = decode(value)
    rows, want = rows_of(value, good)
    assert rows == want


def test_a_message_with_an_invalid_element_sharing_an_event_id():
    # the invalid element comes first: rows must come from the valid one (the worker passes
    # the valid events serialised again when a message had rejected elements)
    value = orjson.dumps([{**BASE, "event_id": "same", "input_tokens": -1}, {**BASE, "event_id": "same"}])
    good, bad = decode(value)
    assert len(good) == 1 and len(bad) == 1
    rows, want = rows_of(value, good, bad=True)
    assert rows == want and rows[0][USAGE_INSERT_COLUMNS.index("input_tokens")] == 100


def test_only_the_events_counted_get_rows():
    value = orjson.dumps([{**BASE, "event_id": "a"}, {**BASE, "event_id": "b"}, {**BASE, "event_id": "a"}])
    good, _ = decode(value)
    rows, _ = rows_of(value, good[1:2])  # a forwarded or duplicate event has no entry
    assert [r[USAGE_INSERT_COLUMNS.index("event_id")] for r in rows] == ["b"]
