"""Batches of events taken straight off an agent's channel, without Faust's per-event stream,
delivered in offset order per partition.

Faust's ``Stream.noack_take`` hands each event through the stream iterator (one event-loop
turn per event, a processor coroutine, sensors, a background drainer task) before it lands
in the batch: about 200 us per message here, most of the cost of a one-event message. The
conductor already puts decoded events on the channel's queue; this takes whatever is there,
does the bookkeeping the stream iterator would have done, and leaves acks to the caller
(``event.ack()`` once the event's effects are stored), exactly like ``noack_take``.

In offset order, without holes: the engine's exactly-once rule (an aggregate whose position
is at or past an event's already holds it) needs every partition's events decided in offset
order. Faust does not promise it: after a rebalance it seeks each partition back to its
committed offset, and messages fetched from the old position are still delivered, ahead of
the ones re-read from the committed offset (patches, 7.). Here each partition's next offset
is tracked from where it was sought (``patches.SOUGHT``); a message further on is held back
(not delivered, not acknowledged) and the partition sought back to the next offset, unless a
reader of our own finds no record there (a real gap: retention, transaction markers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiokafka import TopicPartition

from tokenbrake.streams.faust_internals.end_offsets import first_offset_from
from tokenbrake.streams.faust_internals.patches import CONNECTION, FIRST_DELIVERED, SOUGHT, add_real_gap, bootstrap_of

log = logging.getLogger("tokenbrake.worker")


class InOrder:
    """Per partition, the next offset to deliver (one generation of the assignment)."""

    def __init__(self, consumer: Any, probe: Callable[[Any, int], Awaitable[int | None]] | None = None) -> None:
        self.consumer = consumer
        #: (tp, offset) -> the first record at or after offset (None: unknown), from a reader of our own
        self.probe = probe or self._probe
        self.next: dict[Any, int] = {}
        self.probed: dict[Any, tuple[int, int | None]] = {}  # tp -> (next offset, first record at it)
        self.seek_back: dict[Any, int] = {}  # tp -> offset to seek back to after this batch
        self.held: dict[Any, list[int]] = {}  # tp -> offsets held back in this batch (for the log)

    def reset(self) -> None:
        """A new generation: each partition starts again where it was sought (this stream's
        partitions only: the other agents keep theirs)."""
        for tp in self.next:
            FIRST_DELIVERED.pop(tp, None)
        self.next.clear()
        self.probed.clear()

    async def admit(self, message: Any) -> bool:
        """Whether ``message`` is its partition's next one (or the first after a real gap)."""
        tp, offset = message.tp, message.offset
        expected = self.next.get(tp)
        if expected is None:
            expected = SOUGHT.get(tp, offset)  # not sought this generation: trust the first one
            FIRST_DELIVERED[tp] = expected
        if offset == expected:
            self.next[tp] = offset + 1
            return True
        if offset < expected:  # delivered already in this generation (a second fetch of it)
            return False
        if await self._real_gap(tp, expected, offset):
            log.warning("no record in a partition between two offsets; counted as acknowledged",
                        extra={"partition": tp.partition, "topic": tp.topic, "from": expected, "to": offset - 1})
            await add_real_gap(self.consumer, tp, expected, offset - 1)
            self.next[tp] = offset + 1
            return True
        self.seek_back[tp] = expected
        self.held.setdefault(tp, []).append(offset)
        return False

    def hold(self, message: Any) -> None:
        """A message of this generation not delivered (flow paused): read it again."""
        tp = message.tp
        self.seek_back.setdefault(tp, self.next.get(tp, SOUGHT.get(tp, message.offset)))
        self.held.setdefault(tp, []).append(message.offset)

    async def _real_gap(self, tp: Any, expected: int, offset: int) -> bool:
        probed = self.probed.get(tp)
        if probed is None or probed[0] != expected or probed[1] is None:
            probed = self.probed[tp] = (expected, await self.probe(tp, expected))
        return probed[1] is not None and probed[1] >= offset

    async def _probe(self, tp: Any, offset: int) -> int | None:
        return await first_offset_from(bootstrap_of(self.consumer), TopicPartition(tp.topic, tp.partition),
                                       offset, **CONNECTION)

    async def seek_back_held(self) -> None:
        if self.held:  # around a rebalance or a restart only: not per event
            log.info("messages held back to keep offset order; their partitions are read again from the next offset",
                     extra={"held": {f"{tp.partition}": [min(o), max(o), len(o)] for tp, o in self.held.items()},
                            "from": {f"{tp.partition}": o for tp, o in self.seek_back.items()}})
        for tp, offset in self.seek_back.items():
            try:
                await self.consumer.seek(tp, offset)
            except Exception as exc:  # revoked meanwhile: the next owner reads it from its committed offset
                log.info("seek back skipped", extra={"partition": tp.partition, "reason": repr(exc)})
        self.seek_back.clear()
        self.held.clear()


async def take_batches(stream: Any, max_events: int, within_s: float,
                       probe: Callable[[Any, int], Awaitable[int | None]] | None = None) -> AsyncIterator[list[Any]]:
    """Yield lists of at most ``max_events`` events, each partition's in offset order: everything
    queued when the first one arrives, plus what arrives in the next ``within_s`` seconds.
    Events fetched before the last rebalance are skipped unacked, as Faust's stream does (their
    partition's owner reads them again after its seek); events of this generation that cannot
    be delivered yet (flow paused, or past a hole) are read again (see :class:`InOrder`)."""
    app = stream.app
    channel = stream.channel  # the iterator clone the conductor delivers to (see App.stream)
    queue = channel.queue
    consumer = app.consumer
    acking = app.topics.acking_topics
    flow = app.flow_control
    order = InOrder(consumer, probe)
    seen_generation = None
    while not stream.should_stop:
        try:
            events = [await queue.get()]
            _drain(queue, events, max_events)
            if len(events) < max_events and within_s > 0:
                await asyncio.sleep(within_s)
                _drain(queue, events, max_events)
        except StopAsyncIteration:  # Faust throws it into the queue when the channel stops
            return
        generation = app.consumer_generation_id
        if generation != seen_generation:  # a new assignment: its partitions were sought again
            seen_generation = generation
            order.reset()
        live = []
        for event in events:
            message = event.message
            if message.generation_id != generation:
                continue
            if not flow.is_active():
                order.hold(message)
                continue
            if not await order.admit(message):
                continue
            if not message.tracked and message.topic in acking:
                message.tracked = True
                consumer.track_message(message)  # pending ack: a graceful stop waits for it
            live.append(event)
        await order.seek_back_held()
        if live:
            yield live


def _drain(queue: Any, events: list[Any], max_events: int) -> None:
    while len(events) < max_events and not queue.empty():
        events.append(queue.get_nowait())
