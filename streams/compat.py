"""Adjustments to Faust, applied once at app build time.

1. Exact end offsets. Faust's table recovery reads each changelog partition up to its
   reported end offset; on brokers that report end offsets per record batch (the embedded
   one; see clients.offsets) that end can be short, and a restarted worker would resume
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
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

from clients.offsets import exact_end_offsets

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
        if app.flow_control.is_active() and not any(channel.queue.full() for channel in app.topics):
            coros[1].close()  # never started
            await coros[0]
            return None
    return await _original_wait_first(self, *coros, timeout=timeout)


def apply(fetch_max_wait_ms: int = 100, shutdown_timeout_s: float = 10.0,
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
