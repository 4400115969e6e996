"""Rows to CSV or Parquet files: money and prices as exact decimal text (CSV) or decimal128
(Parquet), timestamps as ISO 8601 UTC, nulls as empty cells."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokenbrake.streams.finops.focus import iso, plain


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def write_csv(path: Path, columns: list[str], rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(columns)
        for row in rows:
            out.writerow([cell(row.get(c)) for c in columns])
            n += 1
    return n


def write_parquet(path: Path, columns: list[str], rows: Iterable[dict[str, Any]], decimals: set[str],
                  integers: set[str], timestamps: set[str]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = list(rows)
    fields = []
    for c in columns:
        if c in decimals:
            fields.append(pa.field(c, pa.decimal128(38, 18)))
        elif c in integers:
            fields.append(pa.field(c, pa.int64()))
        elif c in timestamps:
            fields.append(pa.field(c, pa.timestamp("s", tz="UTC")))
        else:
            fields.append(pa.field(c, pa.string()))
    schema = pa.schema(fields)
    table = pa.table({f.name: pa.array([row.get(f.name) for row in data], type=f.type) for f in schema}, schema=schema)
    pq.write_table(table, path)
    return len(data)
