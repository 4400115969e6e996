"""The ClickHouse writer in its own process.

In the worker's process, every slice of Python the writer thread ran (clickhouse-connect's
per-value conversions, chdb's callbacks) had to win the GIL from the busy event loop, so a
flush of a few seconds' rows could take tens of seconds and the buffer, and memory, grew.
Here the worker hands the batch over a pipe (usage rows as their messages' bytes and
what the engine computed per event: see ``UsageSource``); a child process, which owns the
ClickHouse client (and the chdb directory: only one process may open it), builds and
encodes the rows, writes them and answers with the events ClickHouse refused (see
``ClickHouseWriter.write``) or the error. The
:class:`~streams.sink.buffer.SinkBuffer` protocol is unchanged: ``write`` blocks (in the
buffer's thread) until the rows are stored or raises, and nothing is acknowledged before.
A child that dies is started again on the next write; one that does not answer within
``timeout_s`` (a hung ClickHouse client, a frozen server) is killed, the write fails with
a timeout (counted and reported like any failure, the batch retried) and the next write
starts a fresh child.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from typing import Any

from tokenbrake.streams.heap import HeapAger, tune_gc
from tokenbrake.streams.sink.clickhouse import ClickHouseWriter, SinkBatch, Unstorable

log = logging.getLogger("tokenbrake.sink")


#: how often the child moves what survived its writes out of the cyclic collector's reach
HEAP_AGE_INTERVAL_S = 10.0


def _serve(conn: Any, dsn: str, database: str) -> None:  # pragma: no cover - runs in the child
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    writer = ClickHouseWriter(dsn, database)
    # chdb, pyarrow and clickhouse-connect leave ~300k long-lived objects that every full
    # collection walked again while a batch was unpickled and its rows built (a third of the
    # unpickling time): after a write, they are frozen (see streams.heap)
    tune_gc()
    heap = HeapAger(HEAP_AGE_INTERVAL_S)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            break
        if message is None:
            break
        try:
            conn.send(writer.write(message))  # the events ClickHouse refused (usually none)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which retries
            conn.send(f"{type(exc).__name__}: {exc}")
        del message
        heap.maybe_age()
    writer.close()


class SinkProcess:
    """Same interface as :class:`ClickHouseWriter` (``write``, ``close``); not thread-safe."""

    def __init__(self, dsn: str, database: str, timeout_s: float = 60.0) -> None:
        self.dsn, self.db, self.timeout_s = dsn, database, timeout_s
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.is_alive() else None

    def _ensure(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        if self._proc is not None:
            log.warning("clickhouse writer process exited (code %s); starting another", self._proc.exitcode)
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_serve, args=(child, self.dsn, self.db), name="tokenbrake-sink",
                                       daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent

    def write(self, batch: SinkBatch) -> list[Unstorable]:
        self._ensure()
        try:
            self._conn.send(batch)
            if not self._conn.poll(self.timeout_s):
                self._kill()
                raise TimeoutError(f"clickhouse write took longer than {self.timeout_s:.0f}s; writer process "
                                   "restarted, batch kept for the next try")
            answer = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._proc.join(timeout=1)
            raise RuntimeError(f"clickhouse writer process lost: {exc!r}") from exc
        if isinstance(answer, str):
            raise RuntimeError(answer)
        return answer

    def _kill(self) -> None:
        os.kill(self._proc.pid, signal.SIGKILL)
        self._proc.join(timeout=5)
        self._conn.close()

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            self._conn.send(None)
            self._proc.join(timeout=30)
        except (OSError, ValueError):
            pass
        if self._proc.is_alive():
            os.kill(self._proc.pid, signal.SIGKILL)
        self._proc = None
