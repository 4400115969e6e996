"""Opening the configured ClickHouse for a FinOps command (export, report, reprice).

The commands read ClickHouse through the configured DSN, as the worker writes it. An
embedded chdb directory can be opened by one process at a time: while the worker runs, stop
it first, or copy the directory and point ``TOKENBRAKE_CLICKHOUSE_DSN=chdb:///path/to/copy``
at the copy.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any


class StoreUnavailable(Exception):
    """The store cannot be opened; the message is one line for the operator."""


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 into a temporary file for the block (native code writes there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def open_store(dsn: str, database: str) -> Any:
    """A client with the schema and migrations applied (as the worker's writer does)."""
    from tokenbrake.streams.sink.clickhouse import apply_ddl, connect

    try:
        with _quiet_stderr():  # chdb prints its own copy of an open failure: the operator gets one line
            client = connect(dsn)
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else repr(exc)
        if dsn.startswith("chdb://"):  # the usual cause: the worker holds the directory's lock
            raise StoreUnavailable(
                f"cannot open {dsn}: is the worker running? Stop it, or copy the directory and set "
                f"TOKENBRAKE_CLICKHOUSE_DSN=chdb:///path/to/copy ({text[-160:]})") from None
        raise StoreUnavailable(f"cannot open ClickHouse at {dsn}: {text}") from None
    apply_ddl(client, database)
    return client
