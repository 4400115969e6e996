"""The ClickHouse rollups are the core's own totals: they must agree with usage_events, stay
exact when written again, and cover events later than the core's minute retention."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from tokenbrake.schemas.usage import UsageEvent
from tokenbrake.streams.decide.policies import parse_policies
from tokenbrake.streams.engine import Engine, PricedEvent
from tokenbrake.streams.price import PriceBook
from tokenbrake.streams.sink.clickhouse import ClickHouseWriter, SinkBatch, now_text, usage_source
from tokenbrake.streams.sink.rollups import keep_totals

NOW_MS = (int(time.time() * 1000) // 60_000) * 60_000 - 60_000


@pytest.fixture
def writer(tmp_path):  # noqa: ANN201
    w = ClickHouseWriter(f"chdb://{tmp_path / 'chdb'}", "tb")
    yield w
    w.close()


def _event(i: int, ts_ms: int, tenant: str = "acme") -> UsageEvent:
    return UsageEvent(event_id=f"r{i}-{ts_ms}", ts=ts_ms, tenant_id=tenant, feature_id=("chat", "search")[i % 2],
                      user_id=f"u{i % 3}", provider="openai", model=("gpt-4o", "gpt-4o-mini")[i % 3 == 0],
                      input_tokens=100 + i, output_tokens=10 + i, status="error" if i % 5 == 0 else "ok",
                      attempt=int(i % 4 == 0))


def _batch(engine: Engine, events: list[UsageEvent]) -> SinkBatch:
    rows = []
    for offset, ev in enumerate(events):
        priced = engine.process(ev, 0, offset)
        assert isinstance(priced, PricedEvent)
        rows.append(priced)
    batch = SinkBatch([usage_source(rows, now_text())])
    drained = engine.drain()  # the port the worker uses: every state change and the stale minutes
    keep_totals(drained.changes["aggregates"], time.time_ns(), batch.totals)
    batch.stale_minutes = drained.stale_minutes
    return batch


def _by_dimension(client, dimension: str) -> dict:  # noqa: ANN001
    return {tuple(r[:2]): tuple(r[2:]) for r in client.query(
        "SELECT if(dimension = 'tenant', toString(tenant_id), value), window_start, sum(requests), "
        "sum(input_tokens), sum(errors), sum(retries), sum(cost_usd) FROM tb.spend_minute FINAL "
        "WHERE dimension = %(d)s GROUP BY 1, window_start",
        parameters={"d": dimension}).result_rows}


def _from_usage(client, column: str) -> dict:  # noqa: ANN001
    sql = ("SELECT toString(COLUMN), toStartOfMinute(ts), count(), sum(input_tokens), countIf(status != 'ok'), "
           "countIf(attempt > 0), sum(cost_usd) FROM tb.usage_events FINAL GROUP BY 1, 2").replace("COLUMN", column)
    return {tuple(r[:2]): tuple(r[2:]) for r in client.query(sql).result_rows}


def test_rollups_agree_with_usage_events_and_are_idempotent(writer):
    engine = Engine(parse_policies(""), PriceBook(), clock=lambda: NOW_MS + 120_000)
    first = _batch(engine, [_event(i, NOW_MS + i * 1_500) for i in range(60)])  # two minutes
    writer.write(first)
    second = _batch(engine, [_event(i, NOW_MS + 30_000 + i * 500) for i in range(60, 90)])  # the same minutes again
    writer.write(second)
    writer.write(first)  # a redelivered older flush: its rows are older versions, nothing changes
    client = writer.client
    assert _by_dimension(client, "feature") == _from_usage(client, "feature_id")
    assert _by_dimension(client, "model") == _from_usage(client, "model")
    assert _by_dimension(client, "tenant") == _from_usage(client, "tenant_id")
    users = client.query("SELECT user_id, sum(requests), sum(cost_usd) FROM tb.spend_user_day FINAL "
                         "GROUP BY user_id ORDER BY user_id").result_rows
    assert users == client.query("SELECT user_id, count(), sum(cost_usd) FROM tb.usage_events FINAL "
                                 "GROUP BY user_id ORDER BY user_id").result_rows
    assert sum(r[1] for r in users) == 90


def test_events_later_than_the_minute_retention_are_rebuilt_from_usage_events(writer):
    engine = Engine(parse_policies(""), PriceBook(), clock=lambda: NOW_MS)
    writer.write(_batch(engine, [_event(i, NOW_MS - 30_000 + i) for i in range(5)]))
    late_ms = NOW_MS - 3 * 3_600_000  # 3 h late: within the dedupe horizon, past the minute buckets
    late = _batch(engine, [_event(i, late_ms + i * 1000, tenant="acme") for i in range(5, 12)])
    assert late.stale_minutes == {("acme", late_ms // 60_000)}
    assert not any(key.startswith(f"m{late_ms // 60_000}|") for key in engine.stores["aggregates"].data)
    writer.write(late)
    writer.write(late)  # idempotent on this path too
    client = writer.client
    for dimension, column in (("tenant", "tenant_id"), ("feature", "feature_id"), ("model", "model")):
        assert _by_dimension(client, dimension) == _from_usage(client, column)
    assert client.query("SELECT sum(requests) FROM tb.spend_minute FINAL WHERE dimension = 'tenant'"
                        ).result_rows[0][0] == 12


def test_the_writer_process_survives_its_child_dying_and_reports_errors(tmp_path):
    import os
    import signal

    from tokenbrake.streams.sink.process import SinkProcess

    engine = Engine(parse_policies(""), PriceBook(), clock=lambda: NOW_MS + 120_000)
    sink = SinkProcess(f"chdb://{tmp_path / 'chdb'}", "tb")
    try:
        sink.write(_batch(engine, [_event(i, NOW_MS + i) for i in range(5)]))
        first = sink.pid
        os.kill(first, signal.SIGKILL)  # the writer dies between two flushes
        later = _batch(engine, [_event(i, NOW_MS + 1000 + i) for i in range(5, 9)])
        try:  # a flush that meets the dead child fails (the buffer keeps its rows and retries) ...
            sink.write(later)
        except RuntimeError as exc:
            assert "writer process lost" in str(exc)
            sink.write(later)  # ... and the retry starts a new child
        assert sink.pid not in (None, first)
    finally:
        sink.close()
    assert sink.pid is None
    writer = ClickHouseWriter(f"chdb://{tmp_path / 'chdb'}", "tb")  # the child closed chdb: we may open it
    try:
        client = writer.client
        assert client.query("SELECT count() FROM tb.usage_events FINAL").result_rows[0][0] == 9
        assert client.query("SELECT sum(requests) FROM tb.spend_minute FINAL WHERE dimension = 'tenant'"
                            ).result_rows[0][0] == 9
    finally:
        writer.close()

    broken = SinkProcess("http://127.0.0.1:9", "tb")  # nothing listens there
    try:
        with pytest.raises(RuntimeError, match="OperationalError|Connection refused"):
            broken.write(_batch(engine, [_event(20, NOW_MS + 5000)]))
    finally:
        broken.close()


def test_an_old_user_keyed_spend_minute_is_kept_aside(tmp_path):
    from tokenbrake.streams.sink.clickhouse import connect

    dsn = f"chdb://{tmp_path / 'chdb'}"
    client = connect(dsn)
    client.command("CREATE DATABASE tb")
    client.command("CREATE TABLE tb.spend_minute (tenant_id String, user_id String, cost_usd Decimal(18, 9)) "
                   "ENGINE = MergeTree ORDER BY tenant_id")
    client.command("INSERT INTO tb.spend_minute VALUES ('acme', 'u1', '0.5')")
    client.close()
    writer = ClickHouseWriter(dsn, "tb")
    try:
        columns = {r[0] for r in writer.client.query("SELECT name FROM system.columns WHERE database = 'tb' "
                                                     "AND table = 'spend_minute'").result_rows}
        assert "dimension" in columns and "user_id" not in columns
        assert writer.client.query("SELECT sum(cost_usd) FROM tb.spend_minute_legacy").result_rows[0][0] == \
            Decimal("0.5")
    finally:
        writer.close()
