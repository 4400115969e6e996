"""usage_events rows as one Arrow table per insert: no per-row Python list, no JSON per row.

The writer's usual path (see :func:`streams.sink.clickhouse.usage_rows`) built a Python list
per row and a JSON line per row for ClickHouse to parse again. Here each message's JSON is
parsed once (orjson), its elements become Arrow columns in C++ (``Table.from_pylist`` with a
fixed schema: fields the message left out are null, then the contract's default), and the
values the engine computed are whole columns: event time as ``timestamp[ms, UTC]``, cost as
``decimal128(18, 9)`` whose unscaled integers *are* the nano-dollars (exact, no float, no
text); a reported cost as the same type (pyarrow refuses what Decimal(18, 9) cannot hold).
ClickHouse casts each column to its table type (``insert_arrow``).

The rows are the same as the JSON path's (``tests/integration/test_arrow_rows.py`` stores both and
compares them). A value the fixed schema cannot hold (the contract is strict, so this is a
producer the contract let through another way) raises ``ArrowInvalid``/``ArrowTypeError``:
the caller writes that batch through the JSON path instead, and isolates rows ClickHouse
refuses through it too (rare; see ``ClickHouseWriter._isolate``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from tokenbrake.streams.sink.clickhouse import _AS_SENT as AS_SENT
from tokenbrake.streams.sink.clickhouse import USAGE_INSERT_COLUMNS

_INTEGERS = {"input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens",
             "attempt", "latency_ms"}
#: the fields taken from the message as sent: integers, or strings (the contract's own types)
AS_SENT_SCHEMA = pa.schema([(name, pa.int64() if name in _INTEGERS else pa.string()) for name, _ in AS_SENT])
_DEFAULTS = [(name, default) for name, default in AS_SENT if default is not None]
_TS = pa.timestamp("ms", tz="UTC")
_COST = pa.decimal128(18, 9)
_COST_LIMIT = 10**18  # unscaled: 18 digits
#: errors that send a batch through the JSON path instead
ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError)


def _elements(value: bytes, priced: list[tuple]) -> list[dict[str, Any]]:
    """The message's elements of the priced entries, in their order (an id twice in a
    message: its first element, the one the engine counted)."""
    items = orjson.loads(value)
    if not isinstance(items, list):
        items = [items]
    if len(items) == len(priced) and [p[0] for p in priced] == [item.get("event_id") for item in items]:
        return items  # the common message: every element counted, in order
    by_id: dict[str, dict[str, Any]] = {}
    for item in items:
        by_id.setdefault(item["event_id"], item)
    return [by_id[p[0]] for p in priced]


def usage_table(sources: list[tuple[bytes, str, list[tuple]]]) -> pa.Table:
    """One Arrow table of the usage rows of ``sources`` (:data:`UsageSource`), columns in
    ``USAGE_INSERT_COLUMNS`` order."""
    items: list[dict[str, Any]] = []
    entries: list[tuple] = []
    ingested: list[str] = []
    for value, ingested_at, priced in sources:
        items += _elements(value, priced)
        entries += priced
        ingested += [ingested_at] * len(priced)
    sent = pa.Table.from_pylist(items, schema=AS_SENT_SCHEMA)
    for name, default in _DEFAULTS:
        column = sent.column(name)
        if column.null_count:
            sent = sent.set_column(sent.schema.get_field_index(name), name, pc.fill_null(column, default))
    _, ts_ms, cost_nanos, priced_flags, cache_hits, reported = zip(*entries, strict=True) if entries else ([],) * 6
    event_ids = sent.column("event_id")
    call_ids = pa.array([item.get("logical_call_id") for item in items], pa.string())
    call_ids = pc.if_else(pc.fill_null(pc.equal(call_ids, ""), True), event_ids, call_ids)  # `or event_id`
    nanos = pa.array(cost_nanos, pa.int64())
    if len(nanos) and max(abs(pc.min(nanos).as_py()), abs(pc.max(nanos).as_py())) >= _COST_LIMIT:
        raise pa.ArrowInvalid("a cost beyond Decimal(18, 9)")  # the JSON path: ClickHouse refuses it there
    cost = nanos.cast(pa.decimal128(38, 0))  # unscaled nano-dollars
    # pyarrow refuses a value beyond Decimal(18, 9) or finer than 1e-9 (ArrowInvalid: the JSON path)
    has_reported = any(r is not None for r in reported)
    reported_usd = pa.array([None if r is None else Decimal(r) for r in reported], _COST) if has_reported \
        else pa.nulls(len(nanos), _COST)
    computed = {
        "ts": pa.array(ts_ms, pa.int64()).cast(_TS),
        "logical_call_id": call_ids,
        "cache_hit": pa.array(cache_hits, pa.bool_()),
        "reported_cost_usd": reported_usd,
        "cost_usd": pa.Array.from_buffers(_COST, len(cost), cost.buffers()),  # the same integers, scale 9
        "priced": pa.array(priced_flags, pa.bool_()),
        "ingested_at": pa.array(ingested, pa.string()),
    }
    columns = [computed[name] if name in computed else sent.column(name) for name in USAGE_INSERT_COLUMNS]
    return pa.Table.from_arrays(columns, names=USAGE_INSERT_COLUMNS)
