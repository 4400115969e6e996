"""The writer's Arrow usage rows store exactly what its JSON rows store (both into chdb)."""

from __future__ import annotations

import logging

import orjson
import pyarrow as pa
import pytest

from tests.unit.test_usage_rows import BASE, TS
from tokenbrake.streams.engine import PricedEvent
from tokenbrake.streams.ingest.decode import decode
from tokenbrake.streams.sink.arrow_rows import ARROW_ERRORS, usage_table
from tokenbrake.streams.sink.clickhouse import (
    INSERT_CHUNK_ROWS,
    USAGE_INSERT_COLUMNS,
    ClickHouseWriter,
    SinkBatch,
    bodies,
    priced_entry,
    usage_payloads,
    usage_rows,
    usage_source_bytes,
)

MESSAGES = [
    [{**BASE, "event_id": "plain"},  # every optional field left to its default
     {**BASE, "event_id": "coerced", "cache_hit": "true", "reported_cost_usd": "1e-3", "attempt": 2,
      "logical_call_id": "call-9", "status": "timeout", "latency_ms": 40, "cached_input_tokens": 20,
      "environment": "prod", "model_version": "2024-08-06", "tenant_tier": "gold", "session_id": "s1",
      "requested_model": "gpt-4o", "region": "eu", "prompt_version": "v3", "cache_write_tokens": 5,
      "reasoning_tokens": 3},
     {**BASE, "event_id": "integer-money", "reported_cost_usd": 2, "cache_hit": 0, "some_new_field": [1, 2]}],
    {**BASE, "event_id": "single", "ts": "2025-11-24T16:00:00.5Z"},
    [{**BASE, "event_id": "a"}, {**BASE, "event_id": "b", "user_id": "u2"}, {**BASE, "event_id": "a"}],
]


def sources():
    out = []
    for m, message in enumerate(MESSAGES):
        value = orjson.dumps(message)
        good, bad = decode(value)
        assert not bad
        counted = {ev.event_id: ev for ev in reversed(good)}.values()  # an id twice: counted once
        priced = [PricedEvent(ev, TS + i, 1_500_000_123 * i + m, i % 2 == 0, True) for i, ev in enumerate(counted)]
        out.append((value, f"1764000000.{m:03d}", [priced_entry(p) for p in priced]))
    # a message with an invalid element: the worker passes the valid events serialised again
    good, bad = decode(orjson.dumps([{**BASE, "event_id": "same", "input_tokens": -1}, {**BASE, "event_id": "same"}]))
    assert bad
    out.append((usage_source_bytes(good), "1764000000.900", [priced_entry(PricedEvent(good[0], TS, 7, True, True))]))
    return out


def stored(writer: ClickHouseWriter, payloads: list) -> list[tuple]:
    writer._insert(writer.client, "usage_events", USAGE_INSERT_COLUMNS, payloads)
    query = f"SELECT {', '.join(USAGE_INSERT_COLUMNS)} FROM {writer.db}.usage_events ORDER BY event_id"  # noqa: S608
    return writer.client.query(query).result_rows


def test_arrow_rows_store_what_the_json_rows_store(writers):
    by_json, by_arrow = writers
    src = sources()
    payloads = usage_payloads(src)
    assert payloads and all(isinstance(p, pa.Table) for p in payloads)  # the Arrow path, not the fallback
    want = stored(by_json, bodies([row for s in src for row in usage_rows(s)]))
    assert len(want) == sum(len(s[2]) for s in src)
    assert stored(by_arrow, payloads) == want


def test_a_value_outside_the_schema_falls_back_to_the_json_rows_and_says_so(caplog, monkeypatch):
    from tokenbrake.streams.sink import clickhouse

    monkeypatch.setattr(clickhouse, "_json_fallbacks", {})  # no budget used by an earlier test
    caplog.set_level(logging.WARNING, logger="tokenbrake.sink")
    value = orjson.dumps({**BASE, "event_id": "odd", "input_tokens": "100"})  # never past the contract
    entry = ("odd", TS, 1, True, False, None)
    with pytest.raises(ARROW_ERRORS):
        usage_table([(value, "1764000000.000", [entry])])
    assert usage_payloads([(value, "1764000000.000", [entry])]) == bodies(usage_rows((value, "1764000000.000",
                                                                                       [entry])))
    [warning] = [r for r in caplog.records if r.name == "tokenbrake.sink" and "sent as JSON" in r.getMessage()]
    assert warning.getMessage().startswith("usage rows of a flush sent as JSON") and warning.rows == 1


def test_big_batches_are_inserted_in_chunks():
    value = orjson.dumps([{**BASE, "event_id": f"e{i}"} for i in range(INSERT_CHUNK_ROWS + 3)])
    priced = [(f"e{i}", TS, 1, True, False, None) for i in range(INSERT_CHUNK_ROWS + 3)]
    assert [t.num_rows for t in usage_payloads([(value, "1764000000.000", priced)])] == [INSERT_CHUNK_ROWS, 3]


def test_a_whole_batch_through_the_writer(writers):
    writer = writers[1]
    assert writer.write(SinkBatch(sources())) == []
    assert writer.client.query("SELECT count() FROM by_arrow.usage_events").result_rows[0][0] == 7


def _sources_of(values: list[bytes]) -> list:
    out = []
    for m, value in enumerate(values):
        good, bad = decode(value)
        assert good and not bad
        out.append((value, f"1764000000.{m:03d}", [priced_entry(PricedEvent(ev, TS, 5 + m, True, False))
                                                   for ev in good]))
    return out


@pytest.mark.parametrize("only_events", [False, True])
def test_messages_with_line_breaks_and_whitespace_store_what_the_json_rows_store(writers, only_events):
    """Arrays and single events in one batch, and a batch of single events only (read as one
    event per line)."""
    by_json, by_arrow = writers
    pretty = orjson.dumps([{**BASE, "event_id": "p1", "region": "café \"eu\" \\ west"},
                           {**BASE, "event_id": "p2"}], option=orjson.OPT_INDENT_2).replace(b"\n", b"\r\n")
    single = b"\n  " + orjson.dumps({**BASE, "event_id": "s1", "region": "café \"eu\" \\ west"},
                                    option=orjson.OPT_INDENT_2) + b"\n"
    compact = orjson.dumps({**BASE, "event_id": "s2", "logical_call_id": "call-2", "attempt": 1})
    src = _sources_of([single, compact] if only_events else [pretty, single, compact])
    payloads = usage_payloads(src)
    assert payloads and all(isinstance(p, pa.Table) for p in payloads)
    want = stored(by_json, bodies([row for s in src for row in usage_rows(s)]))
    assert stored(by_arrow, payloads) == want and len(want) == (2 if only_events else 4)
    assert {row[USAGE_INSERT_COLUMNS.index("region")] for row in want} >= {"café \"eu\" \\ west"}


def test_a_key_twice_in_an_event_takes_the_json_path():
    value = b'[' + orjson.dumps({**BASE, "event_id": "twice"})[:-1] + b',"user_id":"u2"}]'
    entry = ("twice", TS, 1, True, False, None)
    with pytest.raises(ARROW_ERRORS):
        usage_table([(value, "1764000000.000", [entry])])
    assert usage_payloads([(value, "1764000000.000", [entry])]) == bodies(usage_rows((value, "1764000000.000",
                                                                                       [entry])))
