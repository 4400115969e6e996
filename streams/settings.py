"""The one settings object. Every field reads ``TOKENBRAKE_<NAME>`` from the environment.

Validated as a whole at start-up: every problem is reported at once, and the policies
and price overrides files are loaded here so a bad file stops the worker before it reads
a single event.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tokenbrake.clients.security import KafkaSecurity
from tokenbrake.schemas.signing import DEV_SIGNING_KEY, parse_keyring
from tokenbrake.streams.aggregate.periods import parse_duration_minutes

#: A shorter HMAC secret is guessable.
MIN_SECRET_CHARS = 16
_TOPICS = ("topic_usage", "topic_dlq", "topic_control", "topic_alerts", "topic_incidents", "topic_alerts_dlq")


def signing_keys_problem(spec: str) -> str | None:
    """Why ``key_id:secret[,key_id:secret]`` is not acceptable, or None."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        return "give at least one key_id:secret"
    for part in parts:
        key_id, sep, secret = part.partition(":")
        if not sep or not key_id:
            return f"each key is key_id:secret (got one without a key id, {len(part)} characters)"
        if len(secret) < MIN_SECRET_CHARS:
            return f"key {key_id!r}: the secret must be at least {MIN_SECRET_CHARS} characters (got {len(secret)})"
    return None


def cross_field_problems(values: dict[str, Any]) -> list[str]:
    """Problems between fields, on validated values or (best effort) on raw ones."""
    values = {**{name: f.default for name, f in Settings.model_fields.items()}, **values}
    problems = []
    try:
        if int(values["sink_flush_rows"]) > int(values["sink_max_buffer_rows"]):
            problems.append("sink_flush_rows must not exceed sink_max_buffer_rows")
    except (TypeError, ValueError):
        pass  # reported as a field error
    if len({str(values[name]) for name in _TOPICS}) != len(_TOPICS):
        problems.append(f"the topics must be distinct ({', '.join(_TOPICS)})")
    return problems


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOKENBRAKE_", extra="ignore", validate_default=True)

    # where things are
    kafka_bootstrap: str | None = Field(None, description="host:port[,host:port]; unset = embedded broker")
    home: Path = Field(Path(".tokenbrake"), description="local state: chdb directory, broker logs")
    clickhouse_dsn: str | None = Field(None, description="http://host:8123 or chdb:///abs/path; unset = chdb in home")
    clickhouse_database: str = Field("tokenbrake", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    clickhouse_username: str | None = None
    clickhouse_password: SecretStr | None = None
    clickhouse_ca_cert: Path | None = Field(None, description="CA bundle for an https:// ClickHouse; unset = system")
    app_id: str = "tokenbrake"
    topic_usage: str = "tokenbrake.usage"
    topic_dlq: str = "tokenbrake.usage.dlq"
    topic_control: str = "tokenbrake.control"
    topic_alerts: str = "tokenbrake.alerts"
    topic_outcomes: str = "tokenbrake.outcomes"  # read by the worker when a unit_cost policy counts outcomes
    topic_partitions: int = Field(4, ge=1, le=1024)
    # a consumer group's first join waits on the rebalance timeout on some brokers: keep it short
    kafka_rebalance_timeout_s: float = Field(4.0, gt=0)
    kafka_session_timeout_s: float = Field(10.0, gt=0)
    kafka_fetch_max_wait_ms: int = Field(20, ge=1, le=5000)
    # TLS and SASL for every Kafka client (worker, CLI, and what services build from these): see clients.security
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_oauth_token_provider: str | None = Field(
        None, description="module:attribute of an aiokafka AbstractTokenProvider (or a callable returning one)")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle for the broker's certificate; unset: system")
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None

    # policies and prices
    policies_path: Path | None = None
    price_overrides_path: Path | None = None
    unpriced_fallback_model: str | None = Field(
        None, description="provider:model used to price unknown models; unset = the provider's highest price")

    # paging (streams/paging): routes file; secrets come from the environment variables it names
    paging_routes_path: Path | None = None
    topic_incidents: str = Field("tokenbrake.pager.incidents", description="compacted: one record per incident")
    topic_alerts_dlq: str = "tokenbrake.alerts.dlq"
    pager_in_worker: bool = Field(True, description="`tokenbrake run` starts the pager process when routes are set")
    pager_web_port: int = Field(6067, ge=1, le=65535)
    grafana_url: str = "http://localhost:3000"

    # control signing: "key_id:secret[,key_id:secret]"; the first key signs, all verify
    control_signing_keys: SecretStr = SecretStr(DEV_SIGNING_KEY)
    control_max_future_skew_s: float = Field(300.0, gt=0, description="control events dated further ahead of "
                                             "this host's clock are ignored (see schemas.sequence)")
    control_accept_unsequenced: bool = Field(True, description="accept control events written before per-scope "
                                             "sequences existed (ordered by issued_at); false once none remain")

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
    user_month_totals: bool = Field(False, description="keep every user's month total in the worker's state "
                                    "even when no budget per user and month reads it (one more key and changelog "
                                    "record per active user): a budget per user and month added mid-month then "
                                    "counts the whole month instead of from the restart that added it")
    tick_interval_s: float = Field(1.0, gt=0)
    pipeline_health_interval_s: float = Field(60.0, ge=0, description="how often the worker stores a "
                                              "pipeline_health row (lag, sink buffer, dead letters by reason) "
                                              "for Grafana; 0: never")
    shutdown_timeout_s: float = Field(10.0, gt=0, description="longest wait, on stop, for the last changelog "
                                      "records and rows to be stored, and for the consumer thread (a dead broker)")
    broker_lost_exit_s: float = Field(300.0, ge=0, description="stop with exit code 1 after this long without "
                                      "an answer from the broker, so a supervisor restarts the worker (and an "
                                      "orphaned worker does not spin for ever); 0: never")
    gc_freeze_interval_s: float = Field(1.0, gt=0, description="how often young objects are collected and the "
                                        "survivors frozen out of the cyclic collector's reach: each collection "
                                        "pauses the worker for what survived since the last one")

    # ClickHouse sink
    sink_flush_rows: int = Field(20_000, ge=1)
    sink_flush_interval_s: float = Field(1.0, gt=0)
    sink_max_buffer_rows: int = Field(500_000, ge=1)
    sink_retry_max_s: float = Field(30.0, gt=0)
    sink_write_timeout_s: float = Field(60.0, gt=0, description="a ClickHouse write taking longer is a failure: "
                                        "the writer process is restarted and the batch retried")

    # OpenTelemetry GenAI spans from the Collector's kafka exporter (streams/ingest/otlp*.py); off unless enabled
    otlp_enabled: bool = Field(False, description="read OTLP trace exports from topic_otlp")
    topic_otlp: str = Field("otlp_spans", description="the Collector kafka exporter's traces topic (its default)")
    otlp_tenant_from: str = Field("span:tenant.id,resource:tenant.id", description="where tenant_id comes from, "
                                  "first found: span:ATTR, resource:ATTR, header:NAME (Kafka header), const:VALUE")
    otlp_feature_from: str = Field("", description="same syntax; empty: service.name:operation (e.g. bot:chat)")
    otlp_user_from: str = Field("span:enduser.pseudo.id,resource:enduser.pseudo.id,span:user.id,resource:user.id",
                                description="same syntax; hashed with otlp_user_id_salt; none found: 'unknown'")
    otlp_environment_from: str = "resource:deployment.environment.name,resource:deployment.environment"
    otlp_session_from: str = "span:gen_ai.conversation.id,span:session.id"
    otlp_user_id_salt: SecretStr | None = Field(None, description="the services' reporter salt (UsageReporter "
                                                "user_id_salt): the same user gets the same hash on both paths")
    otlp_input_excludes_cache: str = Field("", description="producers whose input tokens exclude cache reads and "
                                           "writes: instrumentation scope name prefixes or provider:NAME")
    otlp_output_excludes_reasoning: str = Field("", description="likewise, output tokens without reasoning")

    # Prometheus metrics (GET /metrics on the web port; streams/metrics.py)
    metrics_tenant_label: bool = Field(False, description="spend by tenant in tokenbrake_spend_usd_total (at most "
                                       "metrics_max_tenants tenants, the first seen; the rest are 'other')")
    metrics_max_tenants: int = Field(50, ge=1, le=10_000)
    metrics_max_label_values: int = Field(200, ge=1, le=10_000, description="distinct features, models and alert "
                                          "rules per label; beyond it they add to 'other'")

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

    @field_validator("dedupe_horizon")
    @classmethod
    def _dedupe_horizon(cls, v: str) -> str:
        if parse_duration_minutes(v) > 24 * 60:  # a bad duration raises its own ValueError
            raise ValueError("at most 24h (day totals are kept for today and yesterday: an event accepted "
                             "later than that would reopen an expired day with a partial total)")
        return v

    @field_validator("policies_path", "price_overrides_path", "paging_routes_path")
    @classmethod
    def _existing_file(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"no such file {v}")
        return v

    @field_validator("control_signing_keys")
    @classmethod
    def _signing_keys(cls, v: SecretStr) -> SecretStr:
        problem = signing_keys_problem(v.get_secret_value())
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("clickhouse_dsn")
    @classmethod
    def _dsn(cls, v: str | None) -> str | None:
        if v and not v.startswith(("chdb://", "http://", "https://")):
            raise ValueError("must start with chdb://, http:// or https://")
        return v

    @model_validator(mode="wrap")
    @classmethod
    def _whole(cls, data: Any, handler: Any) -> Settings:
        """Field errors and cross-field problems are reported together, in one error."""
        try:
            settings = handler(data)
        except ValidationError as exc:
            extra = cross_field_problems(data if isinstance(data, dict) else {})
            if not extra:
                raise
            raise ValidationError.from_exception_data(cls.__name__, [
                *({k: v for k, v in e.items() if k in ("type", "loc", "input", "ctx")} for e in exc.errors()),
                *({"type": "value_error", "loc": (), "input": data, "ctx": {"error": ValueError(p)}}
                  for p in extra)]) from None
        extra = cross_field_problems(settings.model_dump()) + settings._security_problems()
        if extra:
            raise ValueError("; ".join(extra))
        return settings

    def _security_problems(self) -> list[str]:
        problems = []
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", "clickhouse_ca_cert"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                problems.append(f"{name}: no such file {path}")
        if self.kafka_sasl_mechanism == "OAUTHBEARER" and not self.kafka_sasl_oauth_token_provider:
            problems.append("kafka_sasl_oauth_token_provider: OAUTHBEARER needs module:attribute of a token provider")
        try:  # the rest: what clients.security itself checks (a provider is imported only when used)
            self._kafka_security(oauth_token_provider=object())
        except ValueError as exc:
            problems += [f"kafka security: {p}" for p in str(exc).split("; ") if "token provider" not in p]
        if (self.clickhouse_username or self.clickhouse_password) and not (self.clickhouse_dsn or "").startswith(
                ("http://", "https://")):
            problems.append("clickhouse_username/password need an http:// or https:// clickhouse_dsn")
        return problems

    def kafka_security(self) -> KafkaSecurity:
        """TLS/SASL for every aiokafka client and the Faust app (see clients.security)."""
        provider = None
        if self.kafka_sasl_mechanism == "OAUTHBEARER" and self.kafka_sasl_oauth_token_provider:
            provider = _load_object(self.kafka_sasl_oauth_token_provider)
        return self._kafka_security(oauth_token_provider=provider)

    def _kafka_security(self, oauth_token_provider: Any) -> KafkaSecurity:
        def secret(value: SecretStr | None) -> str | None:
            return value.get_secret_value() if value is not None else None

        def path(value: Path | None) -> str | None:
            return str(value) if value is not None else None

        return KafkaSecurity(
            self.kafka_security_protocol, self.kafka_sasl_mechanism, self.kafka_sasl_username,
            secret(self.kafka_sasl_password),
            oauth_token_provider if self.kafka_sasl_mechanism == "OAUTHBEARER" else None,
            path(self.kafka_ssl_cafile), path(self.kafka_ssl_certfile), path(self.kafka_ssl_keyfile),
            secret(self.kafka_ssl_key_password))

    def kafka_kwargs(self) -> dict[str, Any]:
        """Security keyword arguments for an aiokafka client the worker or the CLI builds."""
        return self.kafka_security().kwargs()

    @model_validator(mode="after")
    def _otlp(self) -> Settings:
        problems = []
        if self.otlp_enabled:
            from tokenbrake.streams.ingest.attribution import source_problems  # the mapping's syntax is owned there

            if self.topic_otlp in {self.topic_usage, self.topic_dlq, self.topic_control, self.topic_alerts}:
                problems.append("topic_otlp must differ from the other topics")
            if self.otlp_user_id_salt is None or not self.otlp_user_id_salt.get_secret_value():
                problems.append("otlp_user_id_salt: required with otlp_enabled (user ids are stored hashed)")
            for name in ("otlp_tenant_from", "otlp_feature_from", "otlp_user_from", "otlp_environment_from",
                         "otlp_session_from"):
                problems += [f"{name}: {p}" for p in source_problems(getattr(self, name))]
            if not self.otlp_tenant_from.strip():
                problems.append("otlp_tenant_from: give at least one source (e.g. resource:tenant.id)")
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

    def control_view_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for every ``clients.KillSwitch`` the worker and the CLI build."""
        return {"keys": self.keyring, "max_future_skew_s": self.control_max_future_skew_s,
                "accept_unsequenced": self.control_accept_unsequenced, "security": self.kafka_security()}

    @property
    def uses_dev_key(self) -> bool:
        return self.control_signing_keys.get_secret_value() == DEV_SIGNING_KEY

    @property
    def chdb_path(self) -> Path:
        return (self.home / "chdb").resolve()

    @property
    def resolved_clickhouse_dsn(self) -> str:
        """The DSN clickhouse-connect opens, with the credentials and CA of an http(s) server
        (so it holds a secret: pass it on, never log it)."""
        if not self.clickhouse_dsn:
            return f"chdb://{self.chdb_path}"
        return with_credentials(self.clickhouse_dsn, self.clickhouse_username,
                                self.clickhouse_password.get_secret_value() if self.clickhouse_password else None,
                                self.clickhouse_ca_cert)

    @property
    def dedupe_horizon_minutes(self) -> int:
        return parse_duration_minutes(self.dedupe_horizon)


def with_credentials(dsn: str, username: str | None, password: str | None, ca_cert: Path | None) -> str:
    """An http(s) DSN with the user, password and CA bundle clickhouse-connect reads from it.

    >>> with_credentials("https://ch.example:8443/db", "svc", "p@ss/word", None)
    'https://svc:p%40ss%2Fword@ch.example:8443/db'
    >>> with_credentials("http://h:8123", None, None, Path("/ca.pem"))
    'http://h:8123?ca_cert=%2Fca.pem'
    """
    parts = urlsplit(dsn)
    if parts.scheme not in ("http", "https"):
        return dsn
    netloc = parts.netloc
    if username or password:
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{quote(username or 'default', safe='')}:{quote(password or '', safe='')}@{host}"
    query = parts.query
    if ca_cert is not None:
        query = "&".join(filter(None, (query, urlencode({"ca_cert": str(ca_cert)}))))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _load_object(spec: str) -> Any:
    """``package.module:attribute``; a callable attribute (a class, a factory) is called once."""
    module, _, attribute = spec.partition(":")
    obj = getattr(importlib.import_module(module), attribute)
    return obj() if callable(obj) and not hasattr(obj, "token") else obj


#: TOKENBRAKE_* variables read elsewhere, not settings
OTHER_VARIABLES = {"TOKENBRAKE_DEMO_TRACE", "TOKENBRAKE_POLICIES_FILE"}  # demo trace; docker-compose mount


def unknown_variables(environ: dict[str, str]) -> list[str]:
    """One warning per ``TOKENBRAKE_*`` variable that is no setting, with the closest name:
    a misspelled ``TOKENBRAKE_POLICY_PATH`` would otherwise leave the worker with no budgets."""
    import difflib

    known = {f"TOKENBRAKE_{name.upper()}" for name in Settings.model_fields} | OTHER_VARIABLES
    warnings = []
    for var in sorted(environ):
        upper = var.upper()
        if upper.startswith("TOKENBRAKE_") and upper not in known:
            names = {k.removeprefix("TOKENBRAKE_"): k for k in known}  # compare what follows the prefix
            close = difflib.get_close_matches(upper.removeprefix("TOKENBRAKE_"), sorted(names), n=1, cutoff=0.6)
            hint = f"; did you mean {names[close[0]]}?" if close else ""
            warnings.append(f"warning: {var} is not a tokenbrake setting, ignored{hint}")
    return warnings
