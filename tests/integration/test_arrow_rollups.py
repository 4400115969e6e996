"""The writer's Arrow rollup rows store exactly what its JSON rollup rows store (both into
chdb), stay idempotent, and a refused usage event is still isolated beside them."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pyarrow as pa
import pytest

from tokenbrake.schemas.control import ControlEvent, Reason, Scope
from tokenbrake.schemas.usage import UsageEvent
from tokenbrake.streams.decide.policies import parse_policies
from tokenbrake.streams.engine import Engine, PricedEvent
from tokenbrake.streams.logs import LogBudget
from tokenbrake.streams.price import PriceBook
from tokenbrake.streams.sink import clickhouse
from tokenbrake.streams.sink import refused as refused_module
from tokenbrake.streams.sink.arrow_rollups import ROLLUP_ARROW_ERRORS, rollup_tables
from tokenbrake.streams.sink.clickhouse import (
    ClickHouseWriter,
    SinkBatch,
    bodies,
    control_row,
    now_text,
    rollup_payloads,
    usage_source,
)
from tokenbrake.streams.sink.rollups import MINUTE_COLUMNS, USER_DAY_COLUMNS, keep_totals, rollup_rows

NOW_MS = (int(time.time() * 1000) // 60_000) * 60_000 - 60_000
MINUTE, DAY = 29_400_000, 20_416
BIG = 2**63 - 1  # the largest counter the Arrow path takes (the JSON path takes up to 2**64 - 1)
#: totals as the worker keeps them (counters and version); the first 8 values count, a
#: changelog record's position may follow (see NINE and EIGHT)
HAND_MADE = {
    f"m{MINUTE}|t=acme": ([1_500_000, 2, 300, 40, 5, 6, 1, 1, 77], 7),
    f"m{MINUTE}|t=acme|f=chat": ([-2_000_000_001, 1, 0, 0, 0, 0, 0, 0, 78], 7),  # a refund: below zero
    f"m{MINUTE}|t=acme|m=gpt|4o=mini": ([10**18 - 1, BIG, BIG, BIG, BIG, BIG, BIG, BIG, 0], 8),  # '|' and '=' in a value
    f"m{MINUTE + 1}|t=ünï cödé|m=": ([1, 0, 0, 0, 0, 0, 0, 0, 1], 2**64 - 2),  # an empty model, the largest version
    f"m{2**32 // 60 - 1}|t=the last minute|f=x": ([3, 1, 1, 1, 1, 1, 1, 1, 2], 9),
    f"d{DAY}|t=acme|u=u1": ([999_999_999, 3, 1, 2, 3, 4, 5, 6, 79], 7),
    f"d{DAY + 1}|t=acme|u=user with spaces, \"quotes\" and a\nnewline": ([5, 1, 0, 0, 0, 0, 0, 0, 3], 9),
    f"d{2**16 - 1}|t=acme|u=": ([0, 0, 0, 0, 0, 0, 0, 0, 80], 10),  # the last day, an empty user
}
#: the same counters as 8 values (the versioned records' counters), each one version later
EIGHT = {key: (vec[:8], version + 1) for key, (vec, version) in HAND_MADE.items()}


def _event(i: int, ts_ms: int, tenant: str = "acme", reported: str = "0.01") -> UsageEvent:
    ev = UsageEvent(event_id=f"r{i}-{ts_ms}", ts=ts_ms, tenant_id=tenant, feature_id=("chat", "search")[i % 2],
                    user_id=f"u{i % 3}", provider="openai", model=("gpt-4o", "gpt-4o-mini")[i % 3 == 0],
                    input_tokens=100 + i, output_tokens=10 + i, status="error" if i % 5 == 0 else "ok",
                    attempt=int(i % 4 == 0), reported_cost_usd="0.01")
    return ev.model_copy(update={"reported_cost_usd": Decimal(reported)})  # past the contract when too big


def engine_totals(events: list[UsageEvent]) -> tuple[SinkBatch, dict]:
    """A batch of ``events`` as the worker hands it over, from a real engine (three dimensions
    of minutes over two minutes, user days over two days)."""
    engine = Engine(parse_policies(""), PriceBook(), clock=lambda: NOW_MS + 120_000)
    priced = [engine.process(ev, 0, offset) for offset, ev in enumerate(events)]
    assert all(isinstance(p, PricedEvent) for p in priced)
    totals: dict = {}
    keep_totals(engine.drain().changes["aggregates"], time.time_ns(), totals)
    return SinkBatch([usage_source(priced, now_text())], totals=totals), totals


def stored(writer: ClickHouseWriter) -> tuple[list[tuple], list[tuple]]:
    """Every column of both rollup tables, latest versions, in a fixed order."""
    db = writer.db
    return (writer.client.query(f"SELECT {', '.join(MINUTE_COLUMNS)} FROM {db}.spend_minute FINAL "  # noqa: S608
                                "ORDER BY tenant_id, dimension, window_start, value").result_rows,
            writer.client.query(f"SELECT {', '.join(USER_DAY_COLUMNS)} FROM {db}.spend_user_day FINAL "  # noqa: S608
                                "ORDER BY tenant_id, day, user_id").result_rows)


def write_json(writer: ClickHouseWriter, totals: dict) -> None:
    """The JSON path, as the writer sent every rollup before."""
    minutes, user_days = rollup_rows(totals)
    writer._insert(writer.client, "spend_minute", MINUTE_COLUMNS, bodies(minutes))
    writer._insert(writer.client, "spend_user_day", USER_DAY_COLUMNS, bodies(user_days))


def write_arrow(writer: ClickHouseWriter, totals: dict) -> None:
    minutes, user_days = rollup_payloads(totals)
    assert minutes and user_days and all(isinstance(p, pa.Table) for p in minutes + user_days)  # not the fallback
    writer._insert(writer.client, "spend_minute", MINUTE_COLUMNS, minutes)
    writer._insert(writer.client, "spend_user_day", USER_DAY_COLUMNS, user_days)


def test_arrow_rollups_store_what_the_json_rollups_store(writers):
    by_json, by_arrow = writers
    yesterday_ms = NOW_MS // 86_400_000 * 86_400_000 - 10_000  # less than a day before NOW_MS
    events = [_event(i, NOW_MS + i * 1_500) for i in range(60)] + [_event(i, yesterday_ms + i, tenant="zeta")
                                                                     for i in range(60, 70)]
    _, totals = engine_totals(events)
    for made in (totals, HAND_MADE, EIGHT):
        write_json(by_json, made)
        write_arrow(by_arrow, made)
    minutes, user_days = stored(by_json)
    assert {row[1] for row in minutes} == {"tenant", "feature", "model"} and len(user_days) == 3 + 3 + 3
    assert stored(by_arrow) == (minutes, user_days)
    # every column, value by value, of a hand-made row
    assert (("acme", "model", "gpt|4o=mini"), Decimal("999999999.999999999"), BIG, 9) in {
        (row[:3], row[11], row[4], row[12]) for row in minutes}
    assert ("acme", "user with spaces, \"quotes\" and a\nnewline") in {row[:2] for row in user_days}


def test_arrow_rollups_are_idempotent_and_a_later_total_wins(writers):
    _, by_arrow = writers
    older = {key: ([c + 1 for c in vec[:8]], version - 1) for key, (vec, version) in HAND_MADE.items()
             if version > 1 and BIG not in vec}
    write_arrow(by_arrow, HAND_MADE)
    once = stored(by_arrow)
    write_arrow(by_arrow, HAND_MADE)  # a redelivery
    write_arrow(by_arrow, older)  # an older flush written again after a newer one
    assert stored(by_arrow) == once


def test_a_value_outside_the_arrow_types_takes_the_json_path():
    for vec in ([10**18, 1, 0, 0, 0, 0, 0, 0], [-10**18, 1, 0, 0, 0, 0, 0, 0], [-2**63, 1, 0, 0, 0, 0, 0, 0],
                [1, -1, 0, 0, 0, 0, 0, 0], [1, 2**64 - 1, 0, 0, 0, 0, 0, 0]):
        minutes, user_days = rollup_payloads({f"m{MINUTE}|t=acme": (vec, 1), f"d{DAY}|t=acme|u=u1": ([0] * 8, 1)})
        assert all(isinstance(p, bytes) for p in minutes + user_days), vec
    for key in (f"m{2**32 // 60}|t=acme", f"d{2**16}|t=acme|u=u1", "m-5|t=acme", "d-3|t=acme|u=u1"):
        minutes, user_days = rollup_payloads({key: ([0] * 8, 1)})  # before 1970 or past DateTime or Date
        assert all(isinstance(p, bytes) for p in minutes + user_days), key
    for key in (f"x{MINUTE}|t=acme", f"m{MINUTE}|t=acme|z=odd", f"m{MINUTE}|tenant"):
        with pytest.raises(ValueError):
            rollup_tables({key: ([0] * 8, 1)})
    for odd in ({f"m{MINUTE}|t=acme": ([1, 2, 3], 1)},  # too few counters: the JSON path fails as before
                {f"m{MINUTE}|t=acme": ([0] * 8, 1), f"m{MINUTE}|t=acme|f=chat": ([0] * 9, 1)},  # two shapes at once
                {f"m{MINUTE}|t=acme": ([0] * 8, -1)}):  # a version below zero
        with pytest.raises(ROLLUP_ARROW_ERRORS):
            rollup_tables(odd)


def fallback_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "tokenbrake.sink" and "sent as JSON" in r.getMessage()]


def test_the_json_fallback_stores_the_rows_and_says_why_once_per_reason(writers, caplog, monkeypatch):
    monkeypatch.setattr(clickhouse, "_json_fallbacks", {})  # no budget used by an earlier test
    _, by_arrow = writers
    caplog.set_level(logging.WARNING, logger="tokenbrake.sink")
    past_64_bits = {f"m{MINUTE}|t=acme": ([1, 2**64 - 1, 0, 0, 0, 0, 0, 0], 1)}  # UInt64 holds it, int64 not
    for version in (1, 2, 3):  # three flushes, one reason: one line
        by_arrow.write(SinkBatch(totals={k: (vec, version) for k, (vec, _) in past_64_bits.items()}))
    assert [(row[:3], row[4], row[11], row[12]) for row in stored(by_arrow)[0]] == [
        (("acme", "tenant", ""), 2**64 - 1, Decimal("0.000000001"), 3)]
    [warning] = fallback_warnings(caplog)
    assert warning.levelname == "WARNING" and warning.reason == "OverflowError" and warning.rows == 1
    two_shapes = {f"m{MINUTE}|t=acme|f=chat": ([5, 1, 0, 0, 0, 0, 0, 0], 1),  # a versioned record's 8 counters
                  f"m{MINUTE}|t=acme|m=gpt": ([5, 1, 0, 0, 0, 0, 0, 0, 99], 1)}  # and a position after them
    by_arrow.write(SinkBatch(totals=two_shapes))
    assert len(stored(by_arrow)[0]) == 3
    assert [w.reason for w in fallback_warnings(caplog)] == [
        "OverflowError", "RollupOutOfRange: counter vectors of different lengths"]
    assert all("acme" not in w.getMessage() for w in fallback_warnings(caplog))


def test_an_unexpected_error_in_the_arrow_path_is_raised_not_sent_as_json(monkeypatch):
    def a_bug(totals):
        raise ValueError("a bug in the Arrow rollups")

    monkeypatch.setattr("tokenbrake.streams.sink.arrow_rollups.rollup_tables", a_bug)
    with pytest.raises(ValueError, match="a bug"):
        rollup_payloads({f"m{MINUTE}|t=acme": ([0] * 8, 1)})
    monkeypatch.undo()
    with pytest.raises(TypeError):  # a counter that is not a number
        rollup_payloads({f"m{MINUTE}|t=acme": ([None] * 8, 1)})


def test_a_refused_usage_event_is_isolated_and_the_rollups_stored(writers):
    by_json, by_arrow = writers
    events = [_event(i, NOW_MS + i * 1_000) for i in range(6)]
    events[3] = _event(3, NOW_MS + 3_000, reported="1000000000000")  # Decimal(18, 9) cannot hold it
    batch, totals = engine_totals(events)
    refused = by_arrow.write(batch)
    assert [orjson.loads(event)["event_id"] for event, _ in refused] == [events[3].event_id]
    assert "Code: 69" in refused[0][1]  # ClickHouse's own words
    assert by_arrow.client.query("SELECT count() FROM by_arrow.usage_events FINAL").result_rows[0][0] == 5
    write_json(by_json, totals)
    assert stored(by_arrow) == stored(by_json)  # the engine counted the event: its totals are stored as before


def test_a_refused_rollup_total_is_left_out_with_an_error_and_the_rest_is_stored(writers, caplog, monkeypatch):
    """A day's spend past what Decimal(18, 9) holds (a forged or runaway reporter) fails every
    insert of its batch: retried for ever, it would stop the sink, and with it every
    acknowledgement. The refused totals are found by halving and left out, loudly; the usage
    rows and every other total are stored."""
    monkeypatch.setattr(refused_module, "_left_out", LogBudget(per_window=10, window_s=600.0))
    caplog.set_level(logging.ERROR, logger="tokenbrake.sink")
    by_json, by_arrow = writers
    events = [_event(i, NOW_MS + i * 1_000) for i in range(6)]
    batch, totals = engine_totals(events)
    totals = dict(totals)  # the batch's own dict takes the refused ones below
    too_big = {f"d{DAY}|t=acme|u=forged": ([10**18, 1, 0, 0, 0, 0, 0, 0, 5], 7),  # $1,000,000,000.000000000
               f"m{MINUTE}|t=forged": ([10**18, 1, 0, 0, 0, 0, 0, 0, 5], 7)}
    batch.totals.update(too_big)
    scope = Scope(tenant_id="acme", user_id="forged")  # the same spend decides a control: its observed is past it too
    batch.controls = [control_row(ControlEvent(
        control_id=f"c{n}", issued_at=datetime.fromtimestamp(NOW_MS / 1000, UTC), scope=scope, action="block",
        reason=Reason(rule="budget", observed=Decimal(observed), threshold=Decimal(5), period="day"), policy_id="p"))
        for n, observed in enumerate(("100000000000", "6"))]
    assert by_arrow.write(batch) == []  # no usage event refused, nothing raised
    assert by_arrow.client.query("SELECT count() FROM by_arrow.usage_events FINAL").result_rows[0][0] == 6
    write_json(by_json, totals)
    assert stored(by_arrow) == stored(by_json)  # every total but the refused ones
    assert by_arrow.client.query("SELECT control_id FROM by_arrow.control_events").result_rows == [("c1",)]
    refused = sorted(r.key for r in caplog.records if "ClickHouse refused" in r.getMessage())
    assert refused == sorted([*too_big, "c0"]) and all(r.levelname == "ERROR" for r in caplog.records)
