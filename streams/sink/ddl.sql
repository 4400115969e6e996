-- tokenbrake ClickHouse schema. Applied idempotently at start-up; {db} is the database.
-- Money columns are Decimal(18, 9): exact nano-dollars, never floats.
-- Tables are ReplacingMergeTree so that every write is idempotent: read them with FINAL.

CREATE DATABASE IF NOT EXISTS {db};

-- One row per counted LLM call attempt, deduplicated by event_id.
CREATE TABLE IF NOT EXISTS {db}.usage_events
(
    event_id            String,
    ts                  DateTime64(3, 'UTC'),
    tenant_id           LowCardinality(String),
    feature_id          LowCardinality(String),
    user_id             String,
    provider            LowCardinality(String),
    model               LowCardinality(String),
    requested_model     LowCardinality(Nullable(String)),
    model_version       Nullable(String),
    environment         LowCardinality(Nullable(String)),
    region              LowCardinality(Nullable(String)),
    prompt_version      LowCardinality(Nullable(String)),
    tenant_tier         LowCardinality(Nullable(String)),
    input_tokens        UInt32,
    output_tokens       UInt32,
    cached_input_tokens UInt32,
    cache_write_tokens  UInt32,
    reasoning_tokens    UInt32,
    logical_call_id     String,
    session_id          Nullable(String),
    attempt             UInt16,
    status              LowCardinality(String),
    latency_ms          Nullable(UInt32),
    cache_hit           Bool,
    cost_usd            Decimal(18, 9),
    reported_cost_usd   Nullable(Decimal(18, 9)),
    priced              Bool,
    ingested_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant_id, ts, event_id);

-- Spend per minute and tenant, tenant x feature, tenant x model (dimension = tenant |
-- feature | model; value = the feature or model, '' for the tenant). Written by the worker
-- as absolute totals from its exactly-once aggregates: the highest version wins.
CREATE TABLE IF NOT EXISTS {db}.spend_minute
(
    tenant_id           LowCardinality(String),
    dimension           LowCardinality(String),
    value               String,
    window_start        DateTime('UTC'),
    requests            UInt64,
    input_tokens        UInt64,
    output_tokens       UInt64,
    cached_input_tokens UInt64,
    reasoning_tokens    UInt64,
    errors              UInt64,
    retries             UInt64,
    cost_usd            Decimal(18, 9),
    version             UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (tenant_id, dimension, window_start, value);

-- Spend per tenant x user x UTC day, absolute totals as above.
CREATE TABLE IF NOT EXISTS {db}.spend_user_day
(
    tenant_id           LowCardinality(String),
    user_id             String,
    day                 Date,
    requests            UInt64,
    input_tokens        UInt64,
    output_tokens       UInt64,
    cached_input_tokens UInt64,
    reasoning_tokens    UInt64,
    errors              UInt64,
    retries             UInt64,
    cost_usd            Decimal(18, 9),
    version             UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, user_id);

CREATE TABLE IF NOT EXISTS {db}.control_events
(
    control_id   String,
    issued_at    DateTime64(3, 'UTC'),
    scope_key    String,
    tenant_id    LowCardinality(String),
    feature_id   Nullable(String),
    user_id      Nullable(String),
    model        Nullable(String),
    action       LowCardinality(String),
    max_rps      Nullable(Float64),
    downgrade_to Nullable(String),
    rule         LowCardinality(String),
    observed     Decimal(18, 9),
    threshold    Decimal(18, 9),
    period       String,
    detail       Nullable(String),
    policy_id    Nullable(String),
    expires_at   Nullable(DateTime64(3, 'UTC')),
    issued_by    LowCardinality(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, issued_at, control_id);

CREATE TABLE IF NOT EXISTS {db}.alerts
(
    alert_id   String,
    ts         DateTime64(3, 'UTC'),
    rule       LowCardinality(String),
    scope_key  String,
    tenant_id  LowCardinality(String),
    feature_id Nullable(String),
    user_id    Nullable(String),
    model      Nullable(String),
    severity   LowCardinality(String),
    state      LowCardinality(String),
    summary    String,
    observed   Decimal(18, 9),
    threshold  Decimal(18, 9),
    dedup_key  String,
    policy_id  Nullable(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, ts, alert_id);
