"""Batch rows for ClickHouse; acknowledge Kafka messages only once their rows are stored.

A flush, in order:
  1. write the batch to ClickHouse (idempotent: ReplacingMergeTree everywhere);
  2. wait until the broker has the changelog records of the same messages (``durable``);
  3. acknowledge the Kafka messages it covers, so their offsets may be committed.
What a failure costs: a crash after 1 and before 2 redelivers the messages; the engine
recognises them as redeliveries (same partition and offset), writes their rows again
(no effect) and does not count them twice. A ClickHouse outage leaves offsets uncommitted
and the buffer growing, while budgets keep being enforced; past ``max_rows`` the worker
stops reading (backpressure) rather than drop anything. Retries back off exponentially.
A usage event ClickHouse refuses to store (a data error, not an outage) is handed to
``on_refused`` (the dead-letter topic) and its message acknowledged with the rest: one bad
value does not stall the sink. A failed changelog write is not retried: the decided state is not on the broker, so the
buffer stops acknowledging for good and calls ``on_fatal``; the worker stops, and its
restart recovers the changelogs and re-reads the unacknowledged messages.

Writes run in the background (one at a time, in one thread): the agent keeps deciding
while the previous flush is being stored, and only waits when the buffer is over its bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tokenbrake.streams.sink.clickhouse import ClickHouseWriter, SinkBatch, Unstorable, UsageSource
from tokenbrake.streams.sink.process import SinkProcess
from tokenbrake.streams.sink.rollups import Totals

log = logging.getLogger("tokenbrake.sink")


class SinkBuffer:
    def __init__(self, writer: ClickHouseWriter | SinkProcess, flush_rows: int, flush_interval_s: float, max_rows: int,
                 retry_max_s: float, on_fatal: Callable[[BaseException], Any] | None = None,
                 on_refused: Callable[[list[Unstorable]], Awaitable[Any]] | None = None) -> None:
        self.writer = writer
        self.on_fatal = on_fatal
        self.on_refused = on_refused  # usage events ClickHouse refused to store (see ClickHouseWriter.write)
        self.fatal: BaseException | None = None
        self.flush_rows, self.flush_interval_s = flush_rows, flush_interval_s
        self.max_rows, self.retry_max_s = max_rows, retry_max_s
        self._batch = SinkBatch()
        self._acks: list[Callable[[], Any]] = []
        self._oldest: float | None = None
        self._backoff = 0.0
        self._next_try = 0.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._durable: list[asyncio.Future] = []  # changelog writes the buffered messages wait for
        self.failures = 0
        self.last_error: str | None = None
        self.rows_written = 0
        self.usage_rows_written = 0
        self.flushes = 0

    def add(self, usage: list[UsageSource], controls: list[tuple], alerts: list[tuple], ack: Callable[[], Any],
            totals: Totals | None = None,
            stale_minutes: set[tuple[str, int]] | None = None, durable: list[asyncio.Future] | None = None) -> None:
        batch = self._batch
        if durable:
            self._durable.extend(durable)
        batch.add_usage(usage, sum(len(source[2]) for source in usage))
        batch.controls.extend(controls)
        batch.alerts.extend(alerts)
        if totals:
            batch.totals.update(totals)
        if stale_minutes:
            batch.stale_minutes |= stale_minutes
        self._acks.append(ack)
        if self._oldest is None:
            self._oldest = time.monotonic()

    def add_rows(self, table: str, columns: list[str], rows: list[Any], ack: Callable[[], Any],
                 durable: list[asyncio.Future] | None = None) -> None:
        """Rows of another table (outcomes, pipeline_health), with the acknowledgement of the
        messages they came from (same protocol as :meth:`add`)."""
        self._batch.add_rows(table, columns, rows)
        self.add([], [], [], ack, durable=durable)

    def __len__(self) -> int:
        return len(self._batch)

    def due(self) -> bool:
        if not self._acks:
            return False
        # the rollup totals ride along: counted, a chunk's changed totals alone (thousands with
        # many scopes) would start a flush per chunk, each rewriting the same minute buckets
        age = time.monotonic() - (self._oldest or time.monotonic())
        return self._batch.recorded_rows >= self.flush_rows or age >= self.flush_interval_s

    async def maybe_flush(self, force: bool = False) -> None:
        """Start a background flush when due; block (backpressure) only while the buffer is over
        its bound. ``force`` (shutdown) waits for the write in flight and makes one more attempt
        whatever the backoff: unflushed messages stay unacknowledged and are redelivered."""
        if force:
            if self._task is not None:
                await self._task
            await self.flush()
            return
        while self.fatal is None:  # after a fatal error the worker is stopping: nothing more to store
            if self._task is not None and not self._task.done():
                if len(self._batch) < self.max_rows:
                    return  # a write is in flight: keep reading and enforcing
                await asyncio.wait({self._task})
                continue
            if not self.due():
                return
            if time.monotonic() >= self._next_try:
                self._task = asyncio.ensure_future(self.flush())
                continue
            if len(self._batch) < self.max_rows:
                return  # ClickHouse is failing: keep enforcing, retry after the backoff
            await asyncio.sleep(max(0.05, self._next_try - time.monotonic()))

    async def flush(self) -> bool:
        async with self._lock:
            if self.fatal is not None:
                return False
            if not self._acks:
                return True
            batch, acks, durable = self._batch, self._acks, self._durable
            self._batch, self._acks, self._durable = SinkBatch(), [], []
            try:
                refused = []
                if len(batch):
                    # 1. write to ClickHouse (in one dedicated thread: clickhouse-connect is blocking)
                    refused = await asyncio.get_running_loop().run_in_executor(self._executor, self.writer.write,
                                                                               batch) or []
            except Exception as exc:
                self._restore(batch, acks)
                self._durable[:0] = durable
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                self._backoff = min(self.retry_max_s, max(0.5, self._backoff * 2))
                self._next_try = time.monotonic() + self._backoff
                log.error("clickhouse write failed; %d rows buffered, retrying in %.1fs: %s",
                          len(self._batch), self._backoff, self.last_error)
                return False
            try:  # 2. the changelog records of the same messages are on the broker
                await asyncio.gather(*durable)
            except Exception as exc:
                self._restore(batch, acks)
                self.fatal = exc
                self.last_error = f"changelog write failed: {type(exc).__name__}: {exc}"[:500]
                log.critical("changelog write failed: the decided state is not on the broker; stopping so a "
                             "restart recovers it (nothing it covers was acknowledged): %s", self.last_error)
                if self.on_fatal is not None:
                    self.on_fatal(exc)
                return False
            if refused and self.on_refused is not None:  # dead-lettered before their messages are acked
                await self.on_refused(refused)
            # 3. acknowledge the Kafka messages these rows came from
            for ack in acks:
                ack()
            self.rows_written += len(batch)
            self.usage_rows_written += batch.usage_rows - len(refused)
            self.flushes += 1
            self._backoff = 0.0
            self._next_try = 0.0
            self.last_error = None
            self._oldest = time.monotonic() if self._acks else None
            return True

    def _restore(self, batch: SinkBatch, acks: list[Callable[[], Any]]) -> None:
        self._batch.merge_older(batch)
        self._acks = acks + self._acks

    def stats(self) -> dict[str, Any]:
        age = time.monotonic() - self._oldest if self._oldest is not None else 0.0
        return {"buffered_rows": len(self._batch), "oldest_buffered_s": round(age, 3), "failures": self.failures,
                "last_error": self.last_error, "fatal": self.fatal is not None, "rows_written": self.rows_written,
                "usage_rows_written": self.usage_rows_written, "flushes": self.flushes}

    def close(self) -> None:
        self._executor.submit(self.writer.close).result()
        self._executor.shutdown(wait=True)
