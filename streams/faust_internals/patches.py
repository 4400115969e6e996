"""Adjustments to Faust, applied once at app build time.

1. Exact end offsets. Faust's table recovery reads each changelog partition up to its
   reported end offset; on brokers that report end offsets per record batch (the embedded
   one; see faust_internals.end_offsets) that end can be short, and a restarted worker would resume
   with partial state. This patch makes Faust's highwater query exact; a no-op on Apache
   Kafka (the probe finds no further records).
2. Fetch wait. Faust hard-codes ``fetch_max_wait_ms=1500``; decisions should not wait on
   it (``TOKENBRAKE_KAFKA_FETCH_MAX_WAIT_MS``, default 100).
3. Shutdown. The consumer thread waits up to 60 s to shut down; with the broker gone a
   stopped worker hung that long. ``TOKENBRAKE_SHUTDOWN_TIMEOUT_S`` (default 10).
4. Delivery. Faust's fetch loop hands every message to the conductor through
   ``wait_first(callback(message), suspend_flow.wait())``: four tasks per message (about
   100 us), so that a delivery blocked on a full stream buffer can be interrupted by a
   rebalance. When the delivery cannot block (flow control active, no stream buffer full),
   it is awaited directly; otherwise Faust's path is taken unchanged.
5. Commits never skip an unacknowledged message. Faust commits up to the end of the first
   run of consecutive acknowledged offsets; its guard against a hole at the head of that
   run is off by one (it lets one unacknowledged message through) and is skipped when the
   partition was never committed (committed offset None or 0). A message taken but not
   acknowledged (a chunk dropped at a rebalance, a crash of its batch) would then be
   committed past and lost. Here the run must start at the committed offset or, for a
   partition never committed, at the first offset delivered since it was assigned
   (``FIRST_DELIVERED``, kept by ``batches.take_batches``).
6. Re-reading after a rebalance. Faust seeks every assigned partition to its committed
   offset after a rebalance, so that messages fetched but not yet decided (dropped with the
   old generation) are read again; aiokafka's ``seek_to_committed`` leaves a partition
   with no committed offset (None or 0) where its fetcher is, so they were never read again
   (and, with 5., committed past). Such partitions are sought to their beginning, where
   their reading started (``auto_offset_reset=earliest``): what was already decided is
   recognised as read again and not counted twice. Where each partition was sought is kept
   (``SOUGHT``): in-order delivery resumes there (``batches.take_batches``).
7. No gaps taken on trust. Faust's fetch loop counts every jump between two offsets it reads
   as a gap (records removed by compaction, a transaction's markers) and treats the offsets
   in it as acknowledged. After a seek back to the committed offset, messages fetched from
   the old position are still delivered: a false jump, and the messages in it (never
   decided) were committed past, lost. Here no gap is added by the fetch loop;
   ``take_batches`` delivers each partition in offset order from ``SOUGHT`` and adds a gap
   only once a reader of its own finds no record in it (``faust_internals.end_offsets.first_offset_from``).
8. Per-message lookups. Every message delivered looked up two settings through Faust's
   settings registry (the event class in ``App.create_event``, ``producer_threaded`` in the
   producer buffer's size) and walked every channel's ``queue`` property in 4. They are read
   once per app (they do not change while it runs) and the queues directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import faust
from faust.transport import consumer as faust_consumer
from faust.transport import producer as faust_producer
from faust.transport.drivers import aiokafka as faust_aiokafka

from tokenbrake.streams.faust_internals.end_offsets import exact_end_offsets

_original = faust_aiokafka.AIOKafkaConsumerThread._highwaters


async def _exact_highwaters(self: Any, partitions: list[Any]) -> Mapping[Any, int]:
    reported = dict(await _original(self, partitions))
    if self.consumer.in_transaction:
        return reported
    bootstrap = self._ensure_consumer()._client._bootstrap_servers
    return await exact_end_offsets(bootstrap, reported, **CONNECTION)


_original_create = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
FETCH_MAX_WAIT_MS = 100
CONNECTION: dict[str, Any] = {}  # TLS/SASL keyword arguments of the app's clients (see apply)


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    """Faust hard-codes a 1.5 s fetch wait; a broker that holds an empty fetch for the
    whole wait delays every decision by up to that much. Use ``FETCH_MAX_WAIT_MS``."""
    consumer = _original_create(self, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
    return consumer


_original_wait_first = faust_consumer.Consumer.wait_first
_SUSPEND_WAIT = asyncio.Event.wait.__code__


async def _wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
    """Faust's fetch loop is the only caller that waits on ``suspend_flow``; its result is
    unused there. Deliver inline when the delivery cannot block (see 4. above)."""
    if (len(coros) == 2 and timeout is None and getattr(coros[1], "cr_code", None) is _SUSPEND_WAIT
            and not self.suspend_flow.is_set() and not self._stopped.is_set() and not self._crashed.is_set()):
        app = self.app
        if app.flow_control.is_active() and not _a_buffer_full(app.topics._topics):
            coros[1].close()  # never started
            await coros[0]
            return None
    return await _original_wait_first(self, *coros, timeout=timeout)


def _a_buffer_full(channels: Any) -> bool:
    for channel in channels:
        queue = channel._queue  # None until the channel is iterated: empty
        if queue is not None and queue.full():
            return True
    return False


_original_create_event = faust.App.create_event


def _create_event(self: Any, key: Any, value: Any, headers: Any, message: Any) -> Any:
    """Faust's ``App.create_event`` with the event class read once per app (see 8.)."""
    event_class = self.__dict__.get("_tokenbrake_event_class")
    if event_class is None:
        event_class = self.__dict__["_tokenbrake_event_class"] = self.conf.Event
    return event_class(self, key, value, headers, message)


_original_wait_until_ebb = faust_producer.ProducerBuffer.wait_until_ebb


async def _wait_until_ebb(self: Any) -> None:
    """Faust's ``ProducerBuffer.wait_until_ebb``, skipped while its unthreaded buffer is under
    its bound, with ``producer_threaded`` read once (see 8.)."""
    threaded = self.__dict__.get("_tokenbrake_threaded")
    if threaded is None:
        threaded = self.__dict__["_tokenbrake_threaded"] = bool(self.app.conf.producer_threaded)
    if threaded or len(self.pending._queue) > self.max_messages:
        await _original_wait_until_ebb(self)


_original_new_offset = faust_consumer.Consumer._new_offset
#: topic partition -> the first offset delivered since it was (re)assigned
FIRST_DELIVERED: dict[Any, int] = {}
#: topic partition -> where the last seek after a rebalance put it: its committed offset, or
#: the first offset of a partition never committed (see 6. and 7.)
SOUGHT: dict[Any, int] = {}


def _new_offset(self: Any, tp: Any) -> int | None:
    """Faust's commit offset for ``tp``, or None while the acknowledged offsets do not start
    where the partition's committed position is (see 5. above)."""
    acked = self._acked[tp]
    if acked:
        start = self._committed_offset[tp]
        if not start:  # never committed: where it was sought, else the first offset delivered
            start = SOUGHT.get(tp, FIRST_DELIVERED.get(tp))
        if start is not None and min(acked) > start:
            return None  # a message before the acknowledged ones is still pending
    return _original_new_offset(self, tp)


_original_seek_to_committed = faust_aiokafka.AIOKafkaConsumerThread.seek_to_committed


async def _seek_to_committed(self: Any) -> Mapping[Any, int]:
    """Faust's seek to the committed offsets, and to the beginning where none is (see 6. above)."""
    committed = await _original_seek_to_committed(self)
    never = [tp for tp, offset in committed.items() if not offset or offset < 0]
    starts: Mapping[Any, int] = {}
    if never:
        consumer = self._ensure_consumer()
        starts = await self.call_thread(consumer.beginning_offsets, never)
        await self.call_thread(consumer.seek_to_beginning, *never)
    SOUGHT.clear()
    SOUGHT.update({tp: offset for tp, offset in committed.items() if offset and offset > 0})
    SOUGHT.update({tp: offset for tp, offset in starts.items() if offset is not None})
    return committed


_original_add_gap = faust_consumer.Consumer._add_gap


async def _no_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """Faust's fetch loop adds no gap (see 7.); ``add_real_gap`` does, once it is proven."""


async def add_real_gap(consumer: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """Count offsets ``offset_from..offset_to`` (no record in them) as acknowledged."""
    await _original_add_gap(consumer, tp, offset_from, offset_to)


def bootstrap_of(consumer: Any) -> Any:
    """The bootstrap servers of Faust's consumer (for a reader of our own)."""
    return consumer._thread._ensure_consumer()._client._bootstrap_servers


def apply(fetch_max_wait_ms: int = 20, shutdown_timeout_s: float = 10.0,
          connection: dict[str, Any] | None = None) -> None:
    global FETCH_MAX_WAIT_MS
    FETCH_MAX_WAIT_MS = fetch_max_wait_ms
    CONNECTION.clear()
    CONNECTION.update(connection or {})
    thread = faust_aiokafka.AIOKafkaConsumerThread
    thread.shutdown_timeout = shutdown_timeout_s
    if thread._highwaters is not _exact_highwaters:
        thread._highwaters = _exact_highwaters  # type: ignore[method-assign]
        thread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
        faust_consumer.Consumer.wait_first = _wait_first  # type: ignore[method-assign]
        faust_consumer.Consumer._new_offset = _new_offset  # type: ignore[method-assign]
        thread.seek_to_committed = _seek_to_committed  # type: ignore[method-assign]
        faust_consumer.Consumer._add_gap = _no_gap  # type: ignore[method-assign]
        faust.App.create_event = _create_event  # type: ignore[method-assign]
        faust_producer.ProducerBuffer.wait_until_ebb = _wait_until_ebb  # type: ignore[method-assign]
