"""Migrations and rollups against a real chdb: applied twice and on top of the previous
release's schema; hourly and daily rollups exact (Decimal) after rows are written again."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest

from tests import finops_seed as seed
from tokenbrake.streams.finops import rollup_sql
from tokenbrake.streams.finops.migrations import MIGRATIONS, Retention, applied, migrate
from tokenbrake.streams.price import PriceBook
from tokenbrake.streams.price.rates import nanos_to_usd
from tokenbrake.streams.sink.clickhouse import connect, ddl_statements

SEEDED_DSN: list[str] = []


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):  # noqa: ANN201
    dsn = f"chdb://{tmp_path_factory.mktemp('finops') / 'chdb'}"
    SEEDED_DSN[:] = [dsn]
    priced = seed.price(seed.seed_events(), PriceBook())
    seed.write(dsn, priced)
    client = connect(dsn)
    rollup_sql.refresh_range(client, seed.DB, seed.START, seed.START + timedelta(days=seed.DAYS))
    yield client, priced
    client.close()


def test_migrations_apply_on_the_previous_schema_and_twice(tmp_path):
    client = connect(f"chdb://{tmp_path / 'chdb'}")
    for stmt in ddl_statements("tb"):  # the previous release (no session_id yet): the base schema and its data
        client.command(stmt.replace("    session_id          Nullable(String),\n", "")
                       .replace("    requested_model     LowCardinality(Nullable(String)),\n", ""))
    assert "session_id" not in client.query("SELECT groupArray(name) FROM system.columns WHERE database = 'tb' "
                                            "AND table = 'usage_events'").result_rows[0][0]
    priced = seed.price(seed.seed_events()[:40], PriceBook())
    client.insert("tb.usage_events", [[p.event.event_id, p.event.ts, p.event.tenant_id, p.event.feature_id,
                                       p.event.user_id, p.event.provider, p.event.model, p.event.input_tokens,
                                       p.event.output_tokens, nanos_to_usd(p.cost_nanos)] for p in priced],
                  column_names=["event_id", "ts", "tenant_id", "feature_id", "user_id", "provider", "model",
                                "input_tokens", "output_tokens", "cost_usd"])
    assert migrate(client, "tb", seed.RETENTION) == [n for n, _, _ in MIGRATIONS]
    assert migrate(client, "tb", seed.RETENTION) == []
    for stmt in ddl_statements("tb"):  # the base schema again at the next start-up: harmless
        client.command(stmt)
    assert migrate(client, "tb", seed.RETENTION) == []
    assert applied(client, "tb") == [n for n, _, _ in MIGRATIONS]
    assert client.query("SELECT type FROM system.columns WHERE database = 'tb' AND table = 'usage_events' "
                        "AND name = 'session_id'").result_rows == [("Nullable(String)",)]
    assert client.query("SELECT type FROM system.columns WHERE database = 'tb' AND table = 'usage_events' "
                        "AND name = 'requested_model'").result_rows == [("LowCardinality(Nullable(String))",)]
    # the events stored before the migration are in the rollups (back-fill)
    hourly = client.query("SELECT sum(cost_usd), sum(requests) FROM tb.usage_hourly FINAL").result_rows[0]
    daily = client.query("SELECT sum(cost_usd), sum(requests) FROM tb.usage_daily FINAL").result_rows[0]
    assert hourly == daily == (seed.total(priced), 40)
    client.close()


def test_retention_settings_set_and_remove_ttls(tmp_path):
    client = connect(f"chdb://{tmp_path / 'chdb'}")
    for stmt in ddl_statements("tb"):
        client.command(stmt)
    migrate(client, "tb", Retention(usage_events_days=30, usage_hourly_days=90, usage_daily_days=800,
                                    rollup_refresh_s=120))

    def ttl(table: str) -> str:
        return client.query("SELECT engine_full FROM system.tables WHERE database = 'tb' AND name = %(t)s",
                            parameters={"t": table}).result_rows[0][0].partition(" TTL ")[2].partition(" SETTINGS")[0]

    assert ttl("usage_events") == "toDateTime(ts) + toIntervalDay(30)"
    assert ttl("usage_hourly") == "hour + toIntervalDay(90)"
    assert ttl("usage_daily") == "day + toIntervalDay(800)"
    refresh = client.query("SELECT create_table_query FROM system.tables WHERE database = 'tb' "
                           "AND name = 'usage_daily_refresh'").result_rows[0][0]
    assert "REFRESH EVERY 2 MINUTE DEPENDS ON tb.usage_hourly_refresh APPEND" in refresh
    (tmp_path / "policies.yaml").write_text('budgets:\n  - {id: m, scope: {tenant: acme}, period: month, '
                                            'limit_usd: "5"}\n  - {id: r, period: "rolling:1h", limit_usd: "1"}\n')
    migrate(client, "tb", Retention(policies_path=tmp_path / "policies.yaml"))
    assert ttl("usage_events") == ttl("usage_hourly") == ttl("usage_daily") == ""
    assert client.query("SELECT policy_id, period, tenant, limit_usd FROM tb.budget_policies FINAL WHERE version = "
                        "(SELECT max(version) FROM tb.budget_policies)").result_rows == [("m", "month", "acme",
                                                                                          Decimal(5))]
    client.close()


def _python_totals(priced, key) -> dict:  # noqa: ANN001
    out: dict = defaultdict(lambda: [0, Decimal(0), Decimal(0), Decimal(0), 0])
    for p in priced:
        row = out[key(p)]
        cost = nanos_to_usd(p.cost_nanos)
        row[0] += 1
        row[1] += cost
        row[2] += cost if p.event.status != "ok" else 0
        row[3] += cost if p.event.attempt > 0 else 0
        row[4] += 0 if p.event.cache_hit else p.event.cached_input_tokens
    return {k: tuple(v) for k, v in out.items()}


def test_hourly_and_daily_rollups_are_exact_after_rows_are_written_again(seeded):
    client, priced = seeded
    dims = "tenant_id, feature_id, model, environment, region, prompt_version, tenant_tier"
    measures = "sum(requests), sum(cost_usd), sum(failed_cost_usd), sum(retry_cost_usd), sum(cached_input_tokens)"

    def labels(e):  # noqa: ANN001, ANN202
        return (e.tenant_id, e.feature_id, e.model, e.environment, e.region, e.prompt_version, e.tenant_tier)

    hourly = {(r[0].replace(tzinfo=None), *r[1:8]): tuple(r[8:]) for r in client.query(
        f"SELECT hour, {dims}, {measures} FROM tb.usage_hourly FINAL GROUP BY hour, {dims}").result_rows}
    expected_hourly = _python_totals(priced, lambda p: (
        p.event.ts.replace(minute=0, second=0, microsecond=0, tzinfo=None), *labels(p.event)))
    assert hourly == expected_hourly
    daily = {tuple(r[:8]): tuple(r[8:]) for r in client.query(
        f"SELECT day, {dims}, {measures} FROM tb.usage_daily FINAL GROUP BY day, {dims}").result_rows}
    assert daily == _python_totals(priced, lambda p: (p.event.ts.date(), *labels(p.event)))
    # every money figure is there: errors and retries cost something in the seed
    assert all(sum(v[i] for v in daily.values()) > 0 for i in (1, 2, 3))


def test_a_rewritten_event_replaces_its_old_cost_in_the_rollups(seeded):
    client, _ = seeded  # one chdb directory per process: a second database in it
    priced = seed.price(seed.seed_events()[:30], PriceBook())
    seed.write(SEEDED_DSN[0], priced, db="rw")
    changed = [seed.Priced(p.event, p.ts_ms, p.cost_nanos * 2, p.priced) for p in priced[:10]]
    seed.write(SEEDED_DSN[0], changed, times=1, db="rw")  # a re-pricing rewrites these rows with a new cost
    rollup_sql.refresh_range(client, "rw", seed.START, seed.START + timedelta(days=seed.DAYS))
    rollup_sql.refresh_range(client, "rw", seed.START, seed.START + timedelta(days=seed.DAYS))  # idempotent
    expected = seed.total(changed) + seed.total(priced[10:])
    assert client.query("SELECT sum(cost_usd), sum(requests) FROM rw.usage_daily FINAL").result_rows[0] == \
        (expected, 30)
    assert client.query("SELECT sum(cost_usd) FROM rw.usage_hourly FINAL").result_rows[0][0] == expected
