"""A usage event ClickHouse refuses to store (a value it cannot take) must not stall the sink:
the writer stores everything else and hands that event back to be dead-lettered. The contract
keeps such values out (reported_cost_usd <= 1,000,000); this is the net under it."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import orjson
import pytest

from tokenbrake.schemas.usage import UsageEvent
from tokenbrake.streams.engine import PricedEvent
from tokenbrake.streams.sink.buffer import SinkBuffer
from tokenbrake.streams.sink.clickhouse import ClickHouseWriter, SinkBatch, now_text, usage_source

NOW_MS = int(time.time() * 1000) - 60_000


def priced(i: int, reported: str = "0.01") -> PricedEvent:
    ev = UsageEvent(event_id=f"e{i}", ts=NOW_MS + i, tenant_id="acme", feature_id="chat", user_id="u1",
                    provider="openai", model="gpt-4o", input_tokens=100, output_tokens=10, reported_cost_usd="0.01")
    # past the contract, as a value it never lets through: a billion does not fit Decimal(18, 9)
    ev = ev.model_copy(update={"reported_cost_usd": Decimal(reported)})
    return PricedEvent(ev, NOW_MS + i, 1_000_000, True, True)


@pytest.fixture
def writer(tmp_path):  # noqa: ANN201
    w = ClickHouseWriter(f"chdb://{tmp_path / 'chdb'}", "tb")
    yield w
    w.close()


def stored_ids(writer: ClickHouseWriter) -> list[str]:
    query = "SELECT event_id FROM tb.usage_events FINAL ORDER BY event_id"
    return [row[0] for row in writer.client.query(query).result_rows]


def test_the_writer_stores_the_rest_and_returns_what_clickhouse_refused(writer):
    messages = [usage_source([priced(1), priced(2), priced(3)], now_text()),
                usage_source([priced(4), priced(5, reported="1000000000000"), priced(6)], now_text()),
                usage_source([priced(7)], now_text())]
    refused = writer.write(SinkBatch(messages))
    assert [orjson.loads(event)["event_id"] for event, _ in refused] == ["e5"]
    assert "Code: 69" in refused[0][1]  # ClickHouse's own words
    assert stored_ids(writer) == ["e1", "e2", "e3", "e4", "e6", "e7"]
    assert writer.write(SinkBatch(messages[:1])) == []  # and the writer goes on as before


def test_refused_events_are_dead_lettered_before_their_messages_are_acknowledged(writer):
    order: list[str] = []

    async def dead_letter(refused: list) -> None:
        order.extend(f"dlq:{orjson.loads(event)['event_id']}" for event, _ in refused)

    async def scenario() -> SinkBuffer:
        sink = SinkBuffer(writer, 1, 0.0, 100, 1.0, on_refused=dead_letter)
        sink.add([usage_source([priced(8), priced(9, reported="1000000000000")], now_text())], [], [],
                 lambda: order.append("ack"))
        assert await sink.flush()
        sink._executor.shutdown(wait=True)
        return sink

    sink = asyncio.run(scenario())
    assert order == ["dlq:e9", "ack"]
    assert sink.stats()["usage_rows_written"] == 1 and stored_ids(writer) == ["e8"]
