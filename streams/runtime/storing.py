"""Steps 3 and 4 of the worker's ordering contract (see streams.worker): what a drain of the
engine stores, and in which order.

Each drain's storing is a job on a :class:`~streams.runtime.store_chain.StoreChain`, after the
jobs of the drains before it: its changed state keys go to their tables' changelogs (once each,
packed into producer batches), then its rows (usage rows, controls, alerts, the changed rollup
totals) join the ClickHouse buffer. A chunk's messages are acknowledged by the buffer once its
rows are stored *and* its changelog records are on the broker; a drain outside a chunk (the
tick's) has nothing to acknowledge and waits for its records itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from tokenbrake.schemas.control import ControlEvent
from tokenbrake.streams.engine import Drained
from tokenbrake.streams.faust_internals.changelog import aiokafka_producer, send_packed
from tokenbrake.streams.runtime.store_chain import StoreChain
from tokenbrake.streams.sink.buffer import SinkBuffer
from tokenbrake.streams.sink.clickhouse import alert_row, control_row
from tokenbrake.streams.sink.rollups import Totals, keep_totals


class Storing:
    """The worker's storing of drains: changelogs through ``app``'s producer, rows to ``sink``."""

    def __init__(self, app: Any, changelogs: dict[str, str], encoder: Callable[[str], Any], meter: Any,
                 sink: SinkBuffer, on_error: Callable[[BaseException], None] | None = None) -> None:
        self.app, self.changelogs, self.encoder, self.meter, self.sink = app, changelogs, encoder, meter, sink
        #: the drains' jobs, in drain order, off the deciding path
        self.chain = StoreChain(on_error=on_error)
        #: rollup totals written to the changelogs, not yet handed to the sink
        self.totals: Totals = {}

    async def persist(self, changes: dict[str, list[tuple[str, Any, int]]],
                      wait: bool = True) -> list[asyncio.Future]:
        """Write each changed key to its table's changelog, once (see ``send_packed``). Returns
        the broker's acknowledgements; with ``wait`` they are awaited here, otherwise the caller
        makes sure no message is acknowledged before them (the sink awaits them before it acks)."""
        producer = aiokafka_producer(self.app)
        pending = []
        for name, records in changes.items():
            self.meter.changelog(name, len(records))
            if name == "aggregates":  # the ClickHouse rollups are these same totals
                keep_totals(records, time.time_ns(), self.totals)
            pending += await send_packed(producer, self.changelogs[name], records, self.encoder(name))
        if wait and pending:
            await asyncio.gather(*pending)
        return pending

    async def chunk(self, drained: Drained, controls: list[ControlEvent], events: list[Any], rows: list[Any],
                    forwarded: list[asyncio.Future]) -> None:
        """A chunk's drain: its messages (``events``) are acknowledged once its records are on
        the broker, its forwarded events delivered and its rows stored."""
        durable = await self.persist(drained.changes, wait=False) + forwarded

        def ack(events: list[Any] = events) -> None:
            for taken in events:
                taken.ack()

        self.sink.add(rows, [control_row(c) for c in controls], [alert_row(a) for a in drained.alerts], ack,
                      *self._take_rollups(drained.stale_minutes), durable=durable)
        await self.sink.maybe_flush()

    async def between_chunks(self, drained: Drained, controls: list[ControlEvent]) -> None:
        """A drain outside a chunk (the tick's rollovers and decays): no message waits on it."""
        pending = await self.persist(drained.changes, wait=False)
        if pending:
            await asyncio.gather(*pending)
        if controls or drained.alerts or self.totals or drained.stale_minutes:
            self.sink.add([], [control_row(c) for c in controls], [alert_row(a) for a in drained.alerts],
                          lambda: None, *self._take_rollups(drained.stale_minutes))

    def _take_rollups(self, stale_minutes: set[tuple[str, int]]) -> tuple[Totals, set[tuple[str, int]]]:
        taken, self.totals = self.totals, {}
        return taken, stale_minutes
