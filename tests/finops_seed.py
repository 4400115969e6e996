"""A seeded ClickHouse for the FinOps tests: events with known totals, written through the
production writer (twice, as a redelivery would), at fixed dates (no wall clock)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tokenbrake.schemas.usage import UsageEvent
from tokenbrake.streams.finops.migrations import Retention
from tokenbrake.streams.price import PriceBook
from tokenbrake.streams.price.rates import nanos_to_usd
from tokenbrake.streams.sink.clickhouse import ClickHouseWriter, SinkBatch, usage_source

#: 2026-03-02 is a Monday; four full weeks of history, then March 30-31
START = datetime(2026, 3, 2, tzinfo=UTC)
DAYS = 30
DB = "tb"


@dataclass(frozen=True)
class Priced:  # what usage_source needs of a PricedEvent
    event: UsageEvent
    ts_ms: int
    cost_nanos: int
    priced: bool


def seed_events() -> list[UsageEvent]:
    """Per day: weekday traffic heavier than weekend; errors, retries, prompt-cache reads and
    semantic cache hits on known calls."""
    events = []
    for d in range(DAYS):
        day = START + timedelta(days=d)
        calls = 6 if day.weekday() < 5 else 2
        for i in range(calls):
            for tenant, tier in (("acme", "pro"), ("globex", "free")):
                ts = day + timedelta(hours=2 + 3 * i, minutes=7 * i)
                events.append(UsageEvent(
                    event_id=f"{tenant}-{d}-{i}", ts=ts, tenant_id=tenant, tenant_tier=tier,
                    feature_id=("chat", "search")[i % 2], user_id=f"u{i % 3}", provider="openai",
                    model=("gpt-4o", "gpt-4o-mini")[i % 3 == 2],
                    requested_model="gpt-4o" if i % 3 == 2 and d % 3 == 0 else None,
                    environment=("prod", "staging")[i == 5],
                    region="eu" if tenant == "acme" else "us", prompt_version=f"v{1 + i % 2}",
                    input_tokens=1000 + 100 * i + d, output_tokens=200 + 10 * i,
                    cached_input_tokens=400 if i % 2 == 0 else 0, cache_write_tokens=100 if i == 1 else 0,
                    status="error" if i == 3 else "ok", attempt=1 if i == 4 else 0,
                    logical_call_id=f"{tenant}-{d}-3" if i == 4 else None, cache_hit=(i == 5 and d % 2 == 0),
                ))
    return events


def price(events: list[UsageEvent], pricebook: PriceBook) -> list[Priced]:
    out = []
    for e in events:
        ts_ms = int(e.ts.timestamp() * 1000)
        if e.cache_hit:
            out.append(Priced(e, ts_ms, 0, True))
            continue
        call = pricebook.price(e.provider, e.model, ts_ms, e.input_tokens, e.output_tokens, e.cached_input_tokens,
                               e.cache_write_tokens)
        out.append(Priced(e, ts_ms, call.cost_nanos, call.priced))
    return out


def write(dsn: str, priced: list[Priced], times: int = 2, db: str = DB) -> None:
    """Through the production writer, ``times`` times (a redelivery writes the same rows again)."""
    writer = ClickHouseWriter(dsn, db)
    try:
        for _ in range(times):
            writer.write(SinkBatch([usage_source(priced, "1772400000.000")]))
    finally:
        writer.close()


def total(priced: list[Priced], keep: Any = lambda p: True) -> Decimal:
    return nanos_to_usd(sum(p.cost_nanos for p in priced if keep(p)))


RETENTION = Retention(rollup_refresh_s=3600)


def write_audit(dsn: str, db: str = DB) -> tuple[int, int]:
    """Controls and alert state changes through the production writer: (controls, alerts)."""
    from tokenbrake.schemas.control import AlertEvent, ControlEvent, Reason, Scope
    from tokenbrake.streams.sink.clickhouse import alert_row, control_row

    controls, alerts = [], []
    for d in (3, 10, 17, 24):
        at = START + timedelta(days=d, hours=15)
        reason = Reason(rule="budget", observed=Decimal("0.06"), threshold=Decimal("0.05"), period="day")
        controls.append(control_row(ControlEvent(
            control_id=f"c{d}", issued_at=at, scope=Scope(tenant_id="acme"), action="downgrade",
            downgrade_to="gpt-4o-mini", reason=reason, policy_id="each-day")))
        for state, later in (("firing", 0), ("resolved", 5)):
            alerts.append(alert_row(AlertEvent(
                alert_id=f"a{d}-{state}", ts=at + timedelta(hours=later), rule="spend_spike", scope=Scope(
                    tenant_id="globex", feature_id="search"), severity="warning", state=state,
                summary="spend 3x the usual", observed=Decimal("3"), threshold=Decimal("2"), dedup_key=f"k{d}")))
    writer = ClickHouseWriter(dsn, db)
    try:
        writer.write(SinkBatch([], controls, alerts))
    finally:
        writer.close()
    return len(controls), len(alerts)


def write_outcomes(dsn: str, db: str = DB) -> int:
    """Two resolved tickets per weekday for acme/chat and one merged PR per week for globex/search."""
    from tokenbrake.schemas.outcome import OutcomeEvent
    from tokenbrake.streams.finops.outcomes import write_outcomes as store
    from tokenbrake.streams.sink.clickhouse import connect

    outcomes = []
    for d in range(DAYS):
        day = START + timedelta(days=d)
        if day.weekday() < 5:
            outcomes += [OutcomeEvent(outcome_id=f"t{d}-{i}", ts=day + timedelta(hours=20), tenant_id="acme",
                                      feature_id="chat", kind="ticket_resolved", value="0.40") for i in range(2)]
        if day.weekday() == 4:
            outcomes.append(OutcomeEvent(outcome_id=f"pr{d}", ts=day + timedelta(hours=21), tenant_id="globex",
                                         feature_id="search", kind="pr_merged"))
    client = connect(dsn)
    try:
        return store(client, db, outcomes)
    finally:
        client.close()
