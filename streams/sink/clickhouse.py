"""ClickHouse storage through clickhouse-connect: DDL, rows, and one idempotent write.

One code path for both targets: ``chdb:///abs/path`` (in-process engine) and
``http://host:8123`` (a server). Every table is a ReplacingMergeTree, so writing the same
batch twice (a redelivery after a crash) changes nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import clickhouse_connect
import orjson

from tokenbrake.schemas.control import AlertEvent, ControlEvent
from tokenbrake.schemas.usage import UsageEvent
from tokenbrake.streams.logs import LogBudget
from tokenbrake.streams.price.rates import nanos_to_text
from tokenbrake.streams.sink.refused import halves, is_data_error, refused_by_halves, store_or_leave_out
from tokenbrake.streams.sink.rollups import MINUTE_COLUMNS, USER_DAY_COLUMNS, Totals, rollup_rows

log = logging.getLogger("tokenbrake.sink")

DDL_PATH = Path(__file__).with_name("ddl.sql")
#: rows per INSERT: a backlog flush must not materialise hundreds of thousands of rows at once
INSERT_CHUNK_ROWS = 20_000

CONTROL_COLUMNS = [
    "control_id", "issued_at", "scope_key", "tenant_id", "feature_id", "user_id", "model", "action", "max_rps",
    "downgrade_to", "rule", "observed", "threshold", "period", "detail", "policy_id", "expires_at", "issued_by",
]
ALERT_COLUMNS = [
    "alert_id", "ts", "rule", "scope_key", "tenant_id", "feature_id", "user_id", "model", "severity", "state",
    "summary", "observed", "threshold", "dedup_key", "policy_id",
]


def connect(dsn: str) -> Any:
    return clickhouse_connect.get_client(dsn=dsn)


def ddl_statements(database: str) -> list[str]:
    text = DDL_PATH.read_text().replace("{db}", database)
    body = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--"))
    return [stmt.strip() for stmt in body.split(";") if stmt.strip()]


def apply_ddl(client: Any, database: str) -> None:
    legacy = client.query("SELECT count() FROM system.columns WHERE database = %(db)s AND table = 'spend_minute' "
                          "AND name = 'user_id'", parameters={"db": database}).result_rows[0][0]
    if legacy:  # before 0.2, spend_minute was keyed by user: keep it aside, start the new shape
        client.command(f"RENAME TABLE {database}.spend_minute TO {database}.spend_minute_legacy")
    for stmt in ddl_statements(database):
        client.command(stmt)
    from tokenbrake.streams.finops.migrations import migrate  # numbered migrations on top of the base schema

    migrate(client, database)


def ts_text(ts_ms: int) -> str:
    """Epoch milliseconds as ClickHouse reads a DateTime64(3) from JSON ("1764000000.123")."""
    return f"{ts_ms // 1000}.{ts_ms % 1000:03d}"


#: The usage rows of one message, as the worker hands them to the writer: the message's bytes
#: (a JSON event or array of events, validated), when it arrived (:func:`ts_text`), and one
#: :func:`priced_entry` per event counted or redelivered. The writer process builds the rows
#: (:func:`usage_rows`): the worker's event loop spends no time on them.
UsageSource = tuple[bytes, str, list[tuple]]

#: usage_events columns as inserted: the event's fields taken from the message as sent (with
#: the contract's defaults), then those the engine computed or the contract coerces.
_COMPUTED = ["ts", "logical_call_id", "cache_hit", "reported_cost_usd", "cost_usd", "priced", "ingested_at"]
_AS_SENT = [(name, None if field.is_required() else field.default) for name, field in UsageEvent.model_fields.items()
            if name not in _COMPUTED]
_AS_SENT_NAMES, _AS_SENT_DEFAULTS = [name for name, _ in _AS_SENT], [default for _, default in _AS_SENT]
USAGE_INSERT_COLUMNS = _AS_SENT_NAMES + _COMPUTED


def priced_entry(p: Any) -> tuple:
    """What a row needs beyond the message's JSON, from a PricedEvent: the values the engine
    computed, and the fields the contract coerces (``cache_hit`` accepts ``"true"``, money
    accepts numbers and exponents), as validated."""
    e = p.event
    reported = e.reported_cost_usd
    return (e.event_id, p.ts_ms, p.cost_nanos, p.priced, e.cache_hit,
            None if reported is None else format(reported, "f"))


def _items_by_id(value: bytes) -> dict[str, dict[str, Any]]:
    """The events of a message by id; an id twice: the first element, the one the engine
    counted (the others were duplicates)."""
    items = orjson.loads(value)
    by_id: dict[str, dict[str, Any]] = {}
    for item in items if isinstance(items, list) else [items]:
        by_id.setdefault(item["event_id"], item)
    return by_id


def usage_rows(source: UsageSource) -> list[list]:
    """usage_events rows (values in USAGE_INSERT_COLUMNS order) of one :data:`UsageSource`
    (the worker re-serialises messages that had invalid elements)."""
    value, ingested, priced = source
    by_id = _items_by_id(value)
    rows = []
    for event_id, ts_ms, cost_nanos, is_priced, cache_hit, reported in priced:
        get = by_id[event_id].get
        row = list(map(get, _AS_SENT_NAMES, _AS_SENT_DEFAULTS))
        row += (ts_text(ts_ms), get("logical_call_id") or event_id, cache_hit, reported, nanos_to_text(cost_nanos),
                is_priced, ingested)
        rows.append(row)
    return rows


def usage_source_bytes(events: list[UsageEvent]) -> bytes:
    """Events serialised again: the message bytes of a :data:`UsageSource` when the original
    message is not usable as is (it had invalid elements) or there is none (tests, tools)."""
    return orjson.dumps([e.model_dump(mode="json") for e in events])


def usage_source(events: list[Any], ingested_at: str) -> UsageSource:
    """A :data:`UsageSource` of PricedEvents without a message (tests, tools)."""
    return usage_source_bytes([p.event for p in events]), ingested_at, [priced_entry(p) for p in events]


def control_row(c: ControlEvent) -> tuple:
    s = c.scope
    return (c.control_id, c.issued_at, s.key(), s.tenant_id, s.feature_id, s.user_id, s.model, c.action,
            c.max_rps, c.downgrade_to, c.reason.rule, c.reason.observed, c.reason.threshold, c.reason.period,
            c.reason.detail, c.policy_id, c.expires_at, c.issued_by)


def alert_row(a: AlertEvent) -> tuple:
    s = a.scope
    return (a.alert_id, a.ts, a.rule, s.key(), s.tenant_id, s.feature_id, s.user_id, s.model, a.severity,
            a.state, a.summary, a.observed, a.threshold, a.dedup_key, a.policy_id)


@dataclass
class SinkBatch:
    usage: list[UsageSource] = field(default_factory=list)
    controls: list[tuple] = field(default_factory=list)
    alerts: list[tuple] = field(default_factory=list)
    #: the aggregate totals the rollup rows are made of (see :mod:`streams.sink.rollups`):
    #: the latest total of a key wins
    totals: Totals = field(default_factory=dict)
    #: (tenant, minute) with no core bucket left: recomputed from usage_events
    stale_minutes: set[tuple[str, int]] = field(default_factory=set)
    usage_rows: int = -1  # rows in ``usage``: counted when not given, kept by add_usage
    #: rows of the other tables (outcomes, pipeline_health): table -> (columns, rows)
    extra: dict[str, tuple[list[str], list[Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.usage_rows < 0:
            self.usage_rows = sum(len(source[2]) for source in self.usage)

    def add_usage(self, sources: list[UsageSource], rows: int) -> None:
        self.usage.extend(sources)
        self.usage_rows += rows

    def __len__(self) -> int:
        return (self.usage_rows + len(self.controls) + len(self.alerts) + len(self.totals)
                + sum(len(rows) for _, rows in self.extra.values()))

    @property
    def recorded_rows(self) -> int:
        """The rows that record something (usage events, controls, alerts, other tables); the
        rollup totals are a summary of the usage rows, bounded by the keys they changed."""
        return len(self) - len(self.totals)

    def add_rows(self, table: str, columns: list[str], rows: list[Any]) -> None:
        self.extra.setdefault(table, (columns, []))[1].extend(rows)

    def merge_older(self, older: SinkBatch) -> None:
        """Put an unwritten older batch back in front of this one (after a failed write)."""
        self.usage[:0] = older.usage
        self.usage_rows += older.usage_rows
        self.controls[:0] = older.controls
        self.alerts[:0] = older.alerts
        self.totals = {**older.totals, **self.totals}
        self.stale_minutes |= older.stale_minutes
        for table, (columns, rows) in older.extra.items():
            self.extra.setdefault(table, (columns, []))[1][:0] = rows


def bodies(rows: list[Any]) -> list[bytes]:
    """JSONCompactEachRow bodies of at most INSERT_CHUNK_ROWS rows."""
    step = INSERT_CHUNK_ROWS
    return [b"\n".join(map(orjson.dumps, rows[i:i + step])) for i in range(0, len(rows), step)]


def usage_payloads(sources: list[UsageSource]) -> list[Any]:
    """The usage rows as Arrow tables of at most INSERT_CHUNK_ROWS rows (see
    streams.sink.arrow_rows); as JSONCompactEachRow bodies when a value does not fit the
    Arrow schema."""
    from tokenbrake.streams.sink.arrow_rows import ARROW_ERRORS, usage_table

    if not sources:
        return []
    try:
        table = usage_table(sources)
    except ARROW_ERRORS as exc:
        warn_json_fallback("usage rows", exc, len(sources))
        return bodies([row for source in sources for row in usage_rows(source)])
    return [table.slice(i, INSERT_CHUNK_ROWS) for i in range(0, table.num_rows, INSERT_CHUNK_ROWS)]


def rollup_payloads(totals: Totals) -> tuple[list[Any], list[Any]]:
    """The spend_minute and spend_user_day rows as Arrow tables of at most INSERT_CHUNK_ROWS
    rows (see streams.sink.arrow_rollups); as JSONCompactEachRow bodies when a value does not
    fit the Arrow types."""
    from tokenbrake.streams.sink.arrow_rollups import ROLLUP_ARROW_ERRORS, rollup_tables

    if not totals:
        return [], []
    try:
        tables = rollup_tables(totals)
    except ROLLUP_ARROW_ERRORS as exc:
        warn_json_fallback("rollups", exc, len(totals))
        minutes, user_days = rollup_rows(totals)
        return bodies(minutes), bodies(user_days)
    minutes_table, days_table = tables
    return ([minutes_table.slice(i, INSERT_CHUNK_ROWS) for i in range(0, minutes_table.num_rows, INSERT_CHUNK_ROWS)],
            [days_table.slice(i, INSERT_CHUNK_ROWS) for i in range(0, days_table.num_rows, INSERT_CHUNK_ROWS)])


#: one WARNING per reason a flush took the JSON path, at most every JSON_FALLBACK_LOG_WINDOW_S
JSON_FALLBACK_LOG_WINDOW_S = 600.0
_json_fallbacks: dict[str, LogBudget] = {}


def warn_json_fallback(rows: str, exc: BaseException, count: int) -> None:
    """Say (rate-limited per reason) that a flush's ``rows`` went as JSON instead of Arrow:
    the slower path, taken on purpose for a value outside the Arrow types. The reason is the
    error's type and words (a fixed sentence, or pyarrow's naming at most an aggregate key),
    never the event's values."""
    from tokenbrake.streams.sink.arrow_rollups import RollupOutOfRange

    reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, RollupOutOfRange) else type(exc).__name__
    budget = _json_fallbacks.get(f"{rows} {reason}")
    if budget is None:
        budget = _json_fallbacks[f"{rows} {reason}"] = LogBudget(per_window=1, window_s=JSON_FALLBACK_LOG_WINDOW_S)
    if budget.allow():
        log.warning("%s of a flush sent as JSON, not Arrow: a value outside the Arrow types", rows,
                    extra={"reason": reason, "detail": str(exc)[:200], "rows": count,
                           "suppressed": budget.take_suppressed()})


def encode_batch(batch: SinkBatch) -> dict[str, Any]:
    """A batch as the writer inserts it (in the writer process): Arrow tables for the usage
    rows and the rollups (JSON bodies for values outside their Arrow schemas), tuples for the rest."""
    minutes, user_days = rollup_payloads(batch.totals)
    return {"usage": usage_payloads(batch.usage), "minutes": minutes, "user_days": user_days,
            "controls": batch.controls, "alerts": batch.alerts, "stale_minutes": sorted(batch.stale_minutes),
            "extra": batch.extra}


#: a usage event ClickHouse refused: its JSON and the error
Unstorable = tuple[bytes, str]


class ClickHouseWriter:
    """Writes a :class:`SinkBatch`. Not thread-safe: the buffer calls it from one thread."""

    def __init__(self, dsn: str, database: str) -> None:
        self.dsn, self.db = dsn, database
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.dsn)
            apply_ddl(self._client, self.db)
        return self._client

    def write(self, batch: SinkBatch) -> list[Unstorable]:
        """Usage rows first, then the rollups, the minutes to rebuild, controls and alerts.

        Returns the usage events ClickHouse refused to store (a value it cannot parse or that
        overflows a column): one such event must not stop the sink for everyone, so when an
        insert fails with a data error the usage rows are written again in halves until what
        is refused is single events; the caller dead-letters them. The rollup totals are
        halved likewise, as are the controls, alerts and other rows, and a refused one is left out
        with an error (see :func:`streams.sink.refused.store_or_leave_out`). Any other error is
        raised (the caller retries the batch)."""
        try:
            try:
                self._write_encoded(encode_batch(batch))
                return []
            except Exception as exc:
                if not is_data_error(exc):
                    raise
            refused = self._isolate(batch.usage) if batch.usage else []
            self._isolate_totals(batch.totals)
            if batch.stale_minutes:
                self._rebuild_minutes(self.client, sorted(batch.stale_minutes))
            for table, columns, rows in (("control_events", CONTROL_COLUMNS, batch.controls),
                                         ("alerts", ALERT_COLUMNS, batch.alerts), *((table, *extra)
                                         for table, extra in batch.extra.items())):
                self._isolate_rows(table, columns, rows)
            return refused
        except Exception:
            self._client = None  # reconnect next time
            raise

    def _isolate(self, sources: list[UsageSource]) -> list[Unstorable]:
        """Write ``sources``' usage rows; on a data error, each half on its own, down to single
        events (a message's events are split too): the refused events and ClickHouse's error."""
        def insert(part: list[UsageSource]) -> None:
            self._insert(self.client, "usage_events", USAGE_INSERT_COLUMNS,
                         bodies([row for source in part for row in usage_rows(source)]))

        def split(part: list[UsageSource]) -> list[list[UsageSource]] | None:
            if len(part) > 1:
                return halves(part)
            (value, ingested, priced), = part
            return None if len(priced) == 1 else [[(value, ingested, entries)] for entries in halves(priced)]

        return [(orjson.dumps(_items_by_id(value)[priced[0][0]]), error)
                for ((value, _, priced),), error in refused_by_halves(insert, sources, split)]

    def _isolate_totals(self, totals: Totals) -> None:
        """Write ``totals``' rollup rows, leaving out (with an error) each total ClickHouse
        refuses: a day's spend past what Decimal(18, 9) holds, say. The worker's state keeps it
        exactly, and the rest of the sink goes on."""
        def insert(items: list[tuple[str, Any]]) -> None:
            minutes, user_days = rollup_payloads(dict(items))
            self._insert(self.client, "spend_minute", MINUTE_COLUMNS, minutes)
            self._insert(self.client, "spend_user_day", USER_DAY_COLUMNS, user_days)

        store_or_leave_out(insert, list(totals.items()), "a rollup total (the worker's state keeps it exactly)",
                           lambda item: item[0])

    def _isolate_rows(self, table: str, columns: list[str], rows: list[Any]) -> None:
        """Write ``rows`` of a table of decisions (controls, alerts, outcomes, health), leaving
        out (with an error) each row ClickHouse refuses: an observed spend past Decimal(18, 9)."""
        store_or_leave_out(lambda part: self.client.insert(f"{self.db}.{table}", part, column_names=columns),
                           rows, f"a row of {table}", lambda row: str(row[0]))

    def _write_encoded(self, message: dict[str, Any]) -> None:
        client = self.client
        for table, key, columns in (("usage_events", "usage", USAGE_INSERT_COLUMNS),
                                    ("spend_minute", "minutes", MINUTE_COLUMNS),
                                    ("spend_user_day", "user_days", USER_DAY_COLUMNS)):
            self._insert(client, table, columns, message[key])
        if message["stale_minutes"]:
            self._rebuild_minutes(client, message["stale_minutes"])
        if message["controls"]:
            client.insert(f"{self.db}.control_events", message["controls"], column_names=CONTROL_COLUMNS)
        if message["alerts"]:
            client.insert(f"{self.db}.alerts", message["alerts"], column_names=ALERT_COLUMNS)
        for table, (columns, rows) in message.get("extra", {}).items():
            if rows:
                client.insert(f"{self.db}.{table}", rows, column_names=columns)

    def _insert(self, client: Any, table: str, columns: list[str], payloads: list[Any]) -> None:
        for body in payloads:
            if isinstance(body, bytes):  # JSONCompactEachRow: ClickHouse parses it, no per-value Python
                client.raw_insert(f"{self.db}.{table}", columns, body, fmt="JSONCompactEachRow")
            else:  # an Arrow table, its columns named
                client.insert_arrow(f"{self.db}.{table}", body)

    def _rebuild_minutes(self, client: Any, stale: list[tuple[str, int]]) -> None:
        """Recompute spend_minute from usage_events for minutes the core no longer holds (events
        later than its minute retention; rare). Their usage rows are already written."""
        conditions, params = [], {}
        for i, (tenant, minute) in enumerate(stale):
            conditions.append(f"(tenant_id = %(t{i})s AND ts >= toDateTime(%(lo{i})s, 'UTC') "
                              f"AND ts < toDateTime(%(hi{i})s, 'UTC'))")
            params.update({f"t{i}": tenant, f"lo{i}": minute * 60, f"hi{i}": (minute + 1) * 60})
        client.command(
            f"INSERT INTO {self.db}.spend_minute SELECT tenant_id, d.1 AS dimension, d.2 AS value, "
            "toStartOfMinute(ts) AS window_start, count(), sum(input_tokens), sum(output_tokens), "
            "sum(cached_input_tokens), sum(reasoning_tokens), countIf(status != 'ok'), countIf(attempt > 0), "
            f"sum(cost_usd), {time.time_ns()} FROM {self.db}.usage_events FINAL "
            "ARRAY JOIN [('tenant', ''), ('feature', toString(feature_id)), ('model', toString(model))] AS d "
            f"WHERE {' OR '.join(conditions)} GROUP BY tenant_id, dimension, value, window_start",
            parameters=params)

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None


def now_text() -> str:
    """Now, as :func:`ts_text`."""
    return ts_text(time.time_ns() // 1_000_000)
