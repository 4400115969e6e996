"""Opening the configured ClickHouse for a FinOps command (export, report, reprice).

The commands read ClickHouse through the configured DSN, as the worker writes it. An
embedded chdb directory can be opened by one process at a time: while the worker runs, stop
it first, or copy the directory and point ``TOKENBRAKE_CLICKHOUSE_DSN=chdb:///path/to/copy``
at the copy.
"""

from __future__ import annotations

from typing import Any


class StoreUnavailable(Exception):
    """The store cannot be opened; the message is one line for the operator."""


def open_store(dsn: str, database: str) -> Any:
    """A client with the schema and migrations applied (as the worker's writer does)."""
    from streams.sink.clickhouse import apply_ddl, connect

    try:
        client = connect(dsn)
    except Exception as exc:
        text = str(exc)
        if dsn.startswith("chdb://") and ("already" in text or "lock" in text.lower()):
            raise StoreUnavailable(
                f"{dsn} is open in another process (the worker?): stop it, or copy the directory and set "
                "TOKENBRAKE_CLICKHOUSE_DSN=chdb:///path/to/copy") from None
        raise StoreUnavailable(f"cannot open ClickHouse at {dsn}: {text.splitlines()[0] if text else exc!r}") from None
    apply_ddl(client, database)
    return client
