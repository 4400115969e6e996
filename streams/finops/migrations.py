"""Numbered, idempotent schema migrations, applied at start-up after the base schema.

The base schema (``streams/sink/ddl.sql``, every statement ``IF NOT EXISTS``) is what every
release created; each :data:`MIGRATIONS` entry then runs once per database, in order, and is
recorded in ``schema_migrations``. Every statement is itself idempotent, so a migration cut
short (a crash between two statements, before its record) is simply run again whole.

Settings-dependent parts (TTLs, the refresh interval) are not migrations: they are set on
every start-up from the settings (:func:`apply_retention`), so changing a setting and
restarting is enough.

Failure costs: a migration that fails raises, and the writer does not start (the worker
retries the write as for any ClickHouse error); nothing half-applied is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenbrake.streams.finops import rollup_sql

#: (number, name, statements for a database)
Migration = tuple[int, str, Callable[[str], list[str]]]


def _rollup_tables(db: str) -> list[str]:
    return [rollup_sql.table_ddl(db, "usage_hourly", "hour", "DateTime('UTC')"),
            rollup_sql.table_ddl(db, "usage_daily", "day", "Date")]


def _backfill(db: str) -> list[str]:
    """Rollups of every event already stored (the refresh views only look back a few days)."""
    return [f"INSERT INTO {db}.usage_hourly {rollup_sql._hourly_select(db, '1')}",
            f"INSERT INTO {db}.usage_daily {rollup_sql._daily_select(db, '1')}"]


def _refresh_views(db: str) -> list[str]:
    return rollup_sql.refresh_view_ddl(db, DEFAULT_REFRESH_S)


def _model_rates(db: str) -> list[str]:
    # USD per token at the base tier, per provider, model and UTC day (see streams.finops.model_rates)
    return [f"""CREATE TABLE IF NOT EXISTS {db}.model_rates
(
    provider         LowCardinality(String),
    model            LowCardinality(String),
    day              Date,
    input_usd        Decimal(38, 18),
    output_usd       Decimal(38, 18),
    cache_read_usd   Decimal(38, 18),
    cache_write_usd  Decimal(38, 18),
    priced           Bool,
    version          UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (provider, model, day)"""]


def _finops_views(db: str) -> list[str]:
    return [
        # money paid for attempts that failed, and for repeat attempts (attempt > 0)
        f"""CREATE VIEW IF NOT EXISTS {db}.cost_lost_daily AS
SELECT day, tenant_id, feature_id, model, environment, sum(requests) AS requests, sum(errors) AS errors,
       sum(retries) AS retries, sum(cost_usd) AS cost_usd, sum(failed_cost_usd) AS failed_cost_usd,
       sum(retry_cost_usd) AS retry_cost_usd
FROM {db}.usage_daily FINAL GROUP BY day, tenant_id, feature_id, model, environment""",
        # prompt cache: cached input tokens at the full input rate minus the cache-read rate paid;
        # semantic cache: what a call answered from the cache would have cost (uncached)
        f"""CREATE VIEW IF NOT EXISTS {db}.cache_savings_daily AS
SELECT u.day AS day, u.tenant_id AS tenant_id, u.feature_id AS feature_id, u.model AS model,
       sum(u.cached_input_tokens) AS cached_input_tokens, sum(u.semantic_cache_hits) AS semantic_cache_hits,
       sum(u.cached_input_tokens * (r.input_usd - r.cache_read_usd)) AS prompt_cache_savings_usd,
       sum(u.semantic_hit_input_tokens * r.input_usd + u.semantic_hit_output_tokens * r.output_usd)
           AS semantic_cache_savings_usd,
       prompt_cache_savings_usd + semantic_cache_savings_usd AS cache_savings_usd
FROM (SELECT * FROM {db}.usage_daily FINAL) AS u
INNER JOIN (SELECT * FROM {db}.model_rates FINAL) AS r
    ON r.provider = u.provider AND r.model = u.model AND r.day = u.day
GROUP BY day, tenant_id, feature_id, model""",
    ]


def _session_id(db: str) -> list[str]:
    return [f"ALTER TABLE {db}.usage_events ADD COLUMN IF NOT EXISTS session_id Nullable(String) "
            "AFTER logical_call_id"]


def _outcomes(db: str) -> list[str]:
    return [f"""CREATE TABLE IF NOT EXISTS {db}.outcomes
(
    outcome_id        String,
    ts                DateTime64(3, 'UTC'),
    tenant_id         LowCardinality(String),
    feature_id        LowCardinality(String),
    user_id           Nullable(String),
    kind              LowCardinality(String),
    value             Nullable(Decimal(18, 9)),
    quality           Nullable(Float64),
    logical_call_ids  Array(String),
    session_id        Nullable(String),
    ingested_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant_id, ts, outcome_id)"""]


def _budget_policies(db: str) -> list[str]:
    # the day and month budgets of the policies file, written at every start-up (see sync_budget_policies)
    return [f"""CREATE TABLE IF NOT EXISTS {db}.budget_policies
(
    policy_id   String,
    period      LowCardinality(String),
    tenant      String,
    feature     String,
    model       String,
    tier        String,
    limit_usd   Decimal(18, 9),
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (version, policy_id)"""]


def _requested_model(db: str) -> list[str]:
    return [f"ALTER TABLE {db}.usage_events ADD COLUMN IF NOT EXISTS requested_model LowCardinality(Nullable(String)) "
            "AFTER model",
            # a downgraded call priced at the model asked for, minus what was paid (base-tier rates of the day)
            f"""CREATE VIEW IF NOT EXISTS {db}.downgrade_savings_daily AS
SELECT toDate(e.ts) AS day, e.tenant_id AS tenant_id, toString(e.feature_id) AS feature_id,
       assumeNotNull(e.requested_model) AS requested_model, toString(e.model) AS model, count() AS calls,
       sum(e.cost_usd) AS paid_usd,
       sum((e.input_tokens - e.cached_input_tokens - e.cache_write_tokens) * r.input_usd
           + e.cached_input_tokens * r.cache_read_usd + e.cache_write_tokens * r.cache_write_usd
           + e.output_tokens * r.output_usd) AS requested_price_usd,
       requested_price_usd - paid_usd AS savings_usd
FROM (SELECT * FROM {db}.usage_events FINAL WHERE requested_model IS NOT NULL AND requested_model != model
      AND NOT cache_hit) AS e
INNER JOIN (SELECT * FROM {db}.model_rates FINAL) AS r
    ON r.provider = e.provider AND r.model = assumeNotNull(e.requested_model) AND r.day = toDate(e.ts)
GROUP BY day, tenant_id, feature_id, requested_model, model"""]


def _pipeline_health(db: str) -> list[str]:
    # written by each worker now and then (streams.runtime.health); kept 30 days
    return [f"""CREATE TABLE IF NOT EXISTS {db}.pipeline_health
(
    ts                 DateTime64(3, 'UTC'),
    worker             String,
    lag_messages       UInt64,
    buffered_rows      UInt64,
    oldest_buffered_s  Float64,
    sink_failures      UInt64,
    dead_letters       Map(String, UInt64)
)
ENGINE = ReplacingMergeTree
ORDER BY (worker, ts)
TTL toDateTime(ts) + INTERVAL 30 DAY"""]


MIGRATIONS: list[Migration] = [
    (1, "hourly and daily rollup tables", _rollup_tables),
    (2, "rollups of the events already stored", _backfill),
    (3, "refreshable views that keep the rollups current", _refresh_views),
    (4, "model rates", _model_rates),
    (5, "cost lost and cache savings views", _finops_views),
    (6, "usage_events.session_id", _session_id),
    (7, "outcomes", _outcomes),
    (8, "budget policies", _budget_policies),
    (9, "usage_events.requested_model and downgrade savings", _requested_model),
    (10, "pipeline_health", _pipeline_health),
]

DEFAULT_REFRESH_S = 60


@dataclass(frozen=True)
class Retention:
    """TTLs in days (None: kept for ever) and the rollup refresh interval, from the settings."""

    usage_events_days: int | None = None
    usage_hourly_days: int | None = None
    usage_daily_days: int | None = None
    rollup_refresh_s: int = DEFAULT_REFRESH_S
    #: the policies file whose day and month budgets are copied to budget_policies (Grafana reads them)
    policies_path: Path | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> Retention:
        return cls(settings.ttl_usage_events_days, settings.ttl_usage_hourly_days, settings.ttl_usage_daily_days,
                   settings.rollup_refresh_s, settings.policies_path)

    @classmethod
    def from_env(cls) -> Retention:
        from tokenbrake.streams.settings import Settings

        return cls.from_settings(Settings())


def applied(client: Any, db: str) -> list[int]:
    return [r[0] for r in client.query(f"SELECT number FROM {db}.schema_migrations FINAL ORDER BY number")
            .result_rows]


def migrate(client: Any, db: str, retention: Retention | None = None) -> list[int]:
    """Apply the migrations not yet recorded, then the retention settings; returns the numbers
    applied now. Call after the base schema (``apply_ddl`` does)."""
    client.command(f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (number UInt32, name String, "
                   f"applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY number")
    done = set(applied(client, db))
    now_applied = []
    for number, name, statements in MIGRATIONS:
        if number in done:
            continue
        for stmt in statements(db):
            client.command(stmt)
        client.command(f"INSERT INTO {db}.schema_migrations (number, name) VALUES (%(n)s, %(name)s)",
                       parameters={"n": number, "name": name})
        now_applied.append(number)
    retention = retention or Retention.from_env()
    apply_retention(client, db, retention)
    if retention.policies_path is not None:
        from tokenbrake.streams.decide.policies import load_policies

        sync_budget_policies(client, db, load_policies(retention.policies_path).budgets)
    return now_applied


def sync_budget_policies(client: Any, db: str, budgets: list[Any]) -> int:
    """Write the day and month budgets (tenant, feature or model scope) as a new snapshot, when they
    differ from the stored one: readers take the rows of the highest version, so a budget removed
    from the file disappears. Returns the rows written."""
    from tokenbrake.streams.finops.forecast import supported

    wanted = sorted((b.id, b.period, b.scope.tenant, b.scope.feature or "", b.scope.model or "", b.scope.tier or "",
                     b.limit_usd) for b in budgets if supported(b)) or [("", "", "", "", "", "", 0)]
    stored = sorted(client.query(
        f"SELECT policy_id, period, tenant, feature, model, tier, limit_usd FROM {db}.budget_policies "
        f"WHERE version = (SELECT max(version) FROM {db}.budget_policies)").result_rows)
    if stored == wanted:  # unchanged since the last start-up (or reconnect): nothing to write
        return 0
    version = time.time_ns()
    rows = [[*row, version] for row in wanted]  # an empty snapshot ('' row) still replaces the last one
    client.insert(f"{db}.budget_policies", rows, column_names=["policy_id", "period", "tenant", "feature", "model",
                                                               "tier", "limit_usd", "version"])
    client.command(f"ALTER TABLE {db}.budget_policies DELETE WHERE version < %(v)s", parameters={"v": version})
    return len(rows)


_TTL_COLUMNS = {"usage_events": "toDateTime(ts)", "usage_hourly": "hour", "usage_daily": "day"}


def apply_retention(client: Any, db: str, retention: Retention) -> None:
    """TTL of raw events and of each rollup, and the refresh interval (metadata only: existing
    parts are not rewritten now; expired rows go at the next merges)."""
    for table, days in (("usage_events", retention.usage_events_days), ("usage_hourly", retention.usage_hourly_days),
                        ("usage_daily", retention.usage_daily_days)):
        engine_full = client.query("SELECT engine_full FROM system.tables WHERE database = %(db)s AND name = %(t)s",
                                   parameters={"db": db, "t": table}).result_rows[0][0]
        has_ttl = " TTL " in engine_full
        if days is not None:
            client.command(f"ALTER TABLE {db}.{table} MODIFY TTL {_TTL_COLUMNS[table]} + INTERVAL {int(days)} DAY",
                           settings={"materialize_ttl_after_modify": 0})
        elif has_ttl:
            client.command(f"ALTER TABLE {db}.{table} REMOVE TTL")
    every = f"REFRESH EVERY {int(retention.rollup_refresh_s)} SECOND"
    client.command(f"ALTER TABLE {db}.usage_hourly_refresh MODIFY {every} APPEND")
    client.command(f"ALTER TABLE {db}.usage_daily_refresh MODIFY {every} DEPENDS ON {db}.usage_hourly_refresh APPEND")
