"""The FinOps answers against a seeded chdb with known totals: cost lost to failures and
retries, cache savings, budget utilisation and both forecasts (money as Decimal)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal

import pytest

from tests import finops_seed as seed
from tokenbrake.streams.decide.policies import parse_policies
from tokenbrake.streams.finops import rollup_sql
from tokenbrake.streams.finops.forecast import budget_utilisation
from tokenbrake.streams.finops.model_rates import sync_rates, usd_per_token
from tokenbrake.streams.price import PriceBook
from tokenbrake.streams.price.rates import nanos_to_usd
from tokenbrake.streams.sink.clickhouse import connect


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):  # noqa: ANN201
    dsn = f"chdb://{tmp_path_factory.mktemp('answers') / 'chdb'}"
    priced = seed.price(seed.seed_events(), PriceBook())
    seed.write(dsn, priced)
    client = connect(dsn)
    rollup_sql.refresh_range(client, seed.DB, seed.START, seed.START + timedelta(days=seed.DAYS))
    sync_rates(client, seed.DB, PriceBook(), date(2026, 3, 1), date(2026, 4, 1))
    yield client, priced
    client.close()


def test_cost_lost_to_failed_attempts_and_retries(seeded):
    client, priced = seeded
    rows = client.query("SELECT tenant_id, sum(failed_cost_usd), sum(retry_cost_usd), sum(errors), sum(retries) "
                        "FROM tb.cost_lost_daily GROUP BY tenant_id ORDER BY tenant_id").result_rows
    expected = []
    for tenant in ("acme", "globex"):
        mine = [p for p in priced if p.event.tenant_id == tenant]
        expected.append((tenant, seed.total(mine, lambda p: p.event.status != "ok"),
                         seed.total(mine, lambda p: p.event.attempt > 0),
                         sum(p.event.status != "ok" for p in mine), sum(p.event.attempt > 0 for p in mine)))
    assert rows == expected
    assert all(r[1] > 0 and r[2] > 0 for r in rows)


def test_cache_savings_price_cached_tokens_at_the_full_input_rate(seeded):
    client, priced = seeded
    book = PriceBook()
    prompt, semantic = defaultdict(Decimal), defaultdict(Decimal)
    for p in priced:
        e = p.event
        rates = book.rates(e.provider, e.model, p.ts_ms).base
        if e.cache_hit:
            semantic[e.model] += e.input_tokens * usd_per_token(rates.input) + \
                e.output_tokens * usd_per_token(rates.output)
        else:
            prompt[e.model] += e.cached_input_tokens * (usd_per_token(rates.input) - usd_per_token(rates.cache_read))
    rows = client.query("SELECT model, sum(prompt_cache_savings_usd), sum(semantic_cache_savings_usd), "
                        "sum(cache_savings_usd) FROM tb.cache_savings_daily GROUP BY model ORDER BY model").result_rows
    assert rows == [(m, prompt[m], semantic[m], prompt[m] + semantic[m]) for m in ("gpt-4o", "gpt-4o-mini")]
    assert sum(r[1] for r in rows) > 0 and sum(r[2] for r in rows) > 0


def test_downgrade_savings_price_the_requested_model(seeded):
    client, priced = seeded
    book, expected = PriceBook(), defaultdict(Decimal)
    for p in priced:
        e = p.event
        if e.requested_model and e.requested_model != e.model and not e.cache_hit:
            r = book.rates(e.provider, e.requested_model, p.ts_ms).base
            would = (usd_per_token(r.input) * (e.input_tokens - e.cached_input_tokens - e.cache_write_tokens)
                     + usd_per_token(r.cache_read) * e.cached_input_tokens
                     + usd_per_token(r.cache_write) * e.cache_write_tokens + usd_per_token(r.output) * e.output_tokens)
            expected[e.tenant_id] += would - nanos_to_usd(p.cost_nanos)
    rows = client.query("SELECT tenant_id, sum(savings_usd), uniqExact(requested_model), uniqExact(model) "
                        "FROM tb.downgrade_savings_daily GROUP BY tenant_id ORDER BY tenant_id").result_rows
    assert rows == [(t, expected[t], 1, 1) for t in ("acme", "globex")]
    assert all(v > 0 for v in expected.values())


POLICIES = """
budgets:
  - {id: acme-month, scope: {tenant: acme}, period: month, limit_usd: "2.00"}
  - {id: each-day, scope: {tenant: "*"}, period: day, limit_usd: "0.05"}
  - {id: chat-month, scope: {tenant: "*", feature: chat}, period: month, limit_usd: "1.00"}
  - {id: per-user, scope: {tenant: acme, user: "*"}, period: day, limit_usd: "0.01"}
"""


def _expected(priced, asof: datetime, start: datetime, end: datetime, keep) -> tuple:  # noqa: ANN001
    hourly: dict[datetime, Decimal] = defaultdict(Decimal)
    for p in priced:
        if keep(p.event):
            hourly[p.event.ts.replace(minute=0, second=0, microsecond=0)] += nanos_to_usd(p.cost_nanos)
    cur = asof.replace(minute=0, second=0, microsecond=0)
    spent = sum((v for h, v in hourly.items() if start <= h <= cur), Decimal(0))
    linear = (spent * Decimal((end - start).total_seconds()) / Decimal((asof - start).total_seconds())) \
        .quantize(Decimal("1e-9"), rounding=ROUND_DOWN)
    ahead, h = Decimal(0), cur + timedelta(hours=1)
    while h < end:
        ahead += sum((hourly.get(h - timedelta(days=7 * k), Decimal(0)) for k in range(1, 5)), Decimal(0))
        h += timedelta(hours=1)
    return spent, linear, spent + ahead / 4


def test_budget_utilisation_with_linear_and_weekday_forecasts(seeded):
    client, priced = seeded
    asof = datetime(2026, 3, 30, 14, 30, tzinfo=UTC)  # a Monday, four full weeks of history behind it
    uses = budget_utilisation(client, seed.DB, parse_policies(POLICIES).budgets, asof)
    by_key = {(u.policy_id, u.tenant_id, u.scope_value): u for u in uses}
    month = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    day = (datetime(2026, 3, 30, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC))
    cases = {("acme-month", "acme", ""): (month, lambda e: e.tenant_id == "acme"),
             ("each-day", "acme", ""): (day, lambda e: e.tenant_id == "acme"),
             ("each-day", "globex", ""): (day, lambda e: e.tenant_id == "globex"),
             ("chat-month", "acme", "chat"): (month, lambda e: e.tenant_id == "acme" and e.feature_id == "chat"),
             ("chat-month", "globex", "chat"): (month, lambda e: e.tenant_id == "globex" and e.feature_id == "chat")}
    assert set(by_key) == set(cases)  # per-user budgets are the worker's live state, not a rollup answer
    for key, ((start, end), keep) in cases.items():
        u = by_key[key]
        assert (u.period_start.replace(tzinfo=UTC), u.period_end.replace(tzinfo=UTC)) == (start, end)
        assert (u.spent_usd, u.linear_forecast_usd, u.weekday_forecast_usd) == \
            _expected(priced, asof, start, end, keep), key
    acme = by_key[("acme-month", "acme", "")]
    assert acme.spent_usd > 0 and acme.used == acme.spent_usd / Decimal(2)
    # the month ends on a Tuesday: the weekday forecast differs from the straight line
    assert acme.weekday_forecast_usd != acme.linear_forecast_usd
