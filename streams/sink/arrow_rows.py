"""usage_events rows as one Arrow table per insert: no per-row Python list, no JSON per row.

The writer's usual path (see :func:`streams.sink.clickhouse.usage_rows`) built a Python list
per row and a JSON line per row for ClickHouse to parse again. Here the messages' bytes
become one line each (see ``_elements``), and Arrow's JSON reader parses them all in
C++ into columns of a fixed schema (fields the message left out are null, then the
contract's default; no Python object per event or value), and the
values the engine computed are whole columns: event time as ``timestamp[ms, UTC]``, cost as
``decimal128(18, 9)`` whose unscaled integers *are* the nano-dollars (exact, no float, no
text); a reported cost as the same type (pyarrow refuses what Decimal(18, 9) cannot hold).
ClickHouse casts each column to its table type (``insert_arrow``).

The rows are the same as the JSON path's (``tests/integration/test_arrow_rows.py`` stores both and
compares them). A value the fixed schema cannot hold (the contract is strict, so this is a
producer the contract let through another way, or a key twice in one event, which Arrow's
reader refuses) raises ``ArrowInvalid``/``ArrowTypeError``:
the caller writes that batch through the JSON path instead, and isolates rows ClickHouse
refuses through it too (rare; see ``ClickHouseWriter._isolate``).
"""

from __future__ import annotations

import io
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

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


#: an event's fields the rows take as sent, and ``logical_call_id``; a field of another type is
#: an error (the JSON path), others are ignored
_EVENT_SCHEMA = pa.schema([*AS_SENT_SCHEMA, ("logical_call_id", pa.string())])
_PARSE_EVENTS = pa_json.ParseOptions(explicit_schema=_EVENT_SCHEMA, unexpected_field_behavior="ignore")
_PARSE_MESSAGES = pa_json.ParseOptions(explicit_schema=pa.schema([("i", pa.list_(pa.struct(list(_EVENT_SCHEMA))))]),
                                       unexpected_field_behavior="ignore")


def _read_lines(lines: list[bytes], options: pa_json.ParseOptions) -> pa.Table:
    body = b"\n".join(lines)
    return pa_json.read_json(io.BytesIO(body), parse_options=options,
                             read_options=pa_json.ReadOptions(use_threads=False, block_size=len(body) + 1))


def _elements(sources: list[tuple[bytes, str, list[tuple]]]) -> pa.Table:
    """The messages' elements of the priced entries, in their order, parsed in C++ (Arrow's
    JSON reader: no Python object per element or value). Each message is one line: an event
    as it is, an array as ``{"i": [events]}`` (a raw line break in valid JSON is only ever
    whitespace, strings escape them: it becomes a space). An id twice in a message: its
    first element, the one the engine counted."""
    values = [value.strip().replace(b"\n", b" ").replace(b"\r", b" ") for value, _, _ in sources]
    if all(value[:1] == b"{" for value in values):  # one event per message
        elements, counts = _read_lines(values, _PARSE_EVENTS), [1] * len(values)
    else:
        lists = _read_lines([b'{"i":' + value + b"}" if value[:1] == b"[" else b'{"i":[' + value + b"]}"
                             for value in values], _PARSE_MESSAGES).column("i").combine_chunks()
        elements, counts = pa.Table.from_struct_array(lists.flatten()), pc.list_value_length(lists).to_pylist()
    if counts == [len(priced) for _, _, priced in sources]:
        wanted = pa.array([entry[0] for _, _, priced in sources for entry in priced], pa.string())
        if elements.column("event_id").equals(pa.chunked_array([wanted])):
            return elements  # the common batch: every element counted, in order
    ids = elements.column("event_id").to_pylist()
    take: list[int] = []
    start = 0
    for count, (_, _, priced) in zip(counts, sources, strict=True):
        first: dict[str, int] = {}
        for index in range(start + count - 1, start - 1, -1):  # backwards: the first element of an id wins
            first[ids[index]] = index
        take += [first[entry[0]] for entry in priced]
        start += count
    return elements.take(pa.array(take, pa.int64()))


def usage_table(sources: list[tuple[bytes, str, list[tuple]]]) -> pa.Table:
    """One Arrow table of the usage rows of ``sources`` (:data:`UsageSource`), columns in
    ``USAGE_INSERT_COLUMNS`` order."""
    entries = [entry for _, _, priced in sources for entry in priced]
    ingested = [ingested_at for _, ingested_at, priced in sources for _ in priced]
    sent = _elements(sources)
    for name, default in _DEFAULTS:
        column = sent.column(name)
        if column.null_count:
            sent = sent.set_column(sent.schema.get_field_index(name), name, pc.fill_null(column, default))
    _, ts_ms, cost_nanos, priced_flags, cache_hits, reported = zip(*entries, strict=True) if entries else ([],) * 6
    event_ids = sent.column("event_id")
    call_ids = sent.column("logical_call_id")
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
