"""The one settings object. Every field reads ``TOKENBRAKE_<NAME>`` from the environment.

Validated as a whole at start-up: every problem is reported at once, and the policies
and price overrides files are loaded here so a bad file stops the worker before it reads
a single event.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.signing import parse_keyring
from streams.aggregate.periods import parse_duration_minutes

#: Used only when no key is configured; the worker logs a warning at start-up.
DEV_SIGNING_KEY = "default:tokenbrake-dev-key-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOKENBRAKE_", extra="ignore", validate_default=True)

    # where things are
    kafka_bootstrap: str | None = Field(None, description="host:port[,host:port]; unset = embedded broker")
    home: Path = Field(Path(".tokenbrake"), description="local state: chdb directory, broker logs")
    clickhouse_dsn: str | None = Field(None, description="http://host:8123 or chdb:///abs/path; unset = chdb in home")
    clickhouse_database: str = Field("tokenbrake", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    app_id: str = "tokenbrake"
    topic_usage: str = "tokenbrake.usage"
    topic_dlq: str = "tokenbrake.usage.dlq"
    topic_control: str = "tokenbrake.control"
    topic_alerts: str = "tokenbrake.alerts"
    topic_outcomes: str = "tokenbrake.outcomes"  # read by `tokenbrake outcomes sink`, not the worker
    topic_partitions: int = Field(4, ge=1, le=1024)
    # a consumer group's first join waits on the rebalance timeout on some brokers: keep it short
    kafka_rebalance_timeout_s: float = Field(4.0, gt=0)
    kafka_session_timeout_s: float = Field(10.0, gt=0)
    kafka_fetch_max_wait_ms: int = Field(100, ge=1, le=5000)

    # policies and prices
    policies_path: Path | None = None
    price_overrides_path: Path | None = None
    unpriced_fallback_model: str | None = Field(
        None, description="provider:model used to price unknown models; unset = the provider's highest price")

    # control signing: "key_id:secret[,key_id:secret]"; the first key signs, all verify
    control_signing_keys: SecretStr = SecretStr(DEV_SIGNING_KEY)

    # processing
    batch_max: int = Field(2000, ge=1, description="messages taken from the stream at once")
    batch_within_s: float = Field(0.005, gt=0, description="longest wait for more messages before deciding "
                                  "those taken (Faust waits this long unless batch_max arrive first)")
    chunk_events: int = Field(5000, ge=1, description="events decided between two state writes (changelogs, "
                              "sink hand-over): bounds the memory and the pause of one write")
    chunk_max_s: float = Field(0.5, gt=0, description="longest time between two state writes: small batches "
                               "share one write (fewer changelog records), and no message waits longer to be "
                               "stored and acknowledged (controls are published at once regardless)")
    dedupe_horizon: str = "24h"
    dedupe_max_entries: int = Field(2_000_000, ge=1000)
    max_future_s: int = Field(300, ge=0, le=3600, description="how far ahead of the clock an event may be stamped; "
                              "further ahead is dead-lettered (reason future)")
    tick_interval_s: float = Field(1.0, gt=0)
    shutdown_timeout_s: float = Field(10.0, gt=0, description="longest wait, on stop, for the last changelog "
                                      "records and rows to be stored, and for the consumer thread (a dead broker)")
    broker_lost_exit_s: float = Field(300.0, ge=0, description="stop with exit code 1 after this long without "
                                      "an answer from the broker, so a supervisor restarts the worker (and an "
                                      "orphaned worker does not spin for ever); 0: never")
    gc_freeze_interval_s: float = Field(10.0, gt=0, description="how often young objects are collected and the "
                                        "survivors frozen out of the cyclic collector's reach")

    # ClickHouse sink
    sink_flush_rows: int = Field(10_000, ge=1)
    sink_flush_interval_s: float = Field(1.0, gt=0)
    sink_max_buffer_rows: int = Field(500_000, ge=1)
    sink_retry_max_s: float = Field(30.0, gt=0)
    sink_write_timeout_s: float = Field(60.0, gt=0, description="a ClickHouse write taking longer is a failure: "
                                        "the writer process is restarted and the batch retried")

    # FinOps rollups and retention (streams/finops/migrations.py): None = kept for ever
    ttl_usage_events_days: int | None = Field(None, ge=1, description="raw usage_events kept this many days")
    ttl_usage_hourly_days: int | None = Field(None, ge=1, description="usage_hourly rollup rows kept this long")
    ttl_usage_daily_days: int | None = Field(None, ge=1, description="usage_daily rollup rows kept this long")
    rollup_refresh_s: int = Field(60, ge=5, le=86_400, description="how often ClickHouse recomputes the "
                                  "rollups of the last two days from usage_events")

    # web endpoint (status, metrics) and logs
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _whole(self) -> Settings:
        problems = []
        try:
            if parse_duration_minutes(self.dedupe_horizon) > 24 * 60:
                problems.append("dedupe_horizon: at most 24h (day totals are kept for today and yesterday: an "
                                "event accepted later than that would reopen an expired day with a partial total)")
        except ValueError as exc:
            problems.append(f"dedupe_horizon: {exc}")
        if self.sink_flush_rows > self.sink_max_buffer_rows:
            problems.append("sink_flush_rows must not exceed sink_max_buffer_rows")
        for name in ("policies_path", "price_overrides_path"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                problems.append(f"{name}: no such file {path}")
        if not self.keyring:
            problems.append("control_signing_keys: give at least one key_id:secret")
        if self.clickhouse_dsn and not self.clickhouse_dsn.startswith(("chdb://", "http://", "https://")):
            problems.append("clickhouse_dsn must start with chdb://, http:// or https://")
        if len({self.topic_usage, self.topic_dlq, self.topic_control, self.topic_alerts}) != 4:
            problems.append("the four topics must be distinct")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def keyring(self) -> dict[str, bytes]:
        return parse_keyring(self.control_signing_keys.get_secret_value())

    @property
    def signing_key(self) -> tuple[str, bytes]:
        key_id = self.control_signing_keys.get_secret_value().split(",")[0].partition(":")[0]
        ring = self.keyring
        return (key_id, ring[key_id]) if key_id in ring else next(iter(ring.items()))

    @property
    def uses_dev_key(self) -> bool:
        return self.control_signing_keys.get_secret_value() == DEV_SIGNING_KEY

    @property
    def chdb_path(self) -> Path:
        return (self.home / "chdb").resolve()

    @property
    def resolved_clickhouse_dsn(self) -> str:
        return self.clickhouse_dsn or f"chdb://{self.chdb_path}"

    @property
    def dedupe_horizon_minutes(self) -> int:
        return parse_duration_minutes(self.dedupe_horizon)
