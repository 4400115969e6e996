"""End offsets that stay right on brokers that report them per record *batch*.

The embedded broker (Tansu) answers ListOffsets(latest) with the base offset of the last
record batch + 1, not the last offset + 1, whenever a producer packed several records in
one batch. Code that reads "up to the end" must therefore read on past the reported end.

The probe seeks each partition to its reported end - 1 and reads until its position reaches
the high-water mark the broker returns with each fetch (on Tansu, reading the last batch
gets there; on Apache Kafka the reported end already is it, and one fetch confirms it). An
empty fetch proves nothing (a slow or busy broker answers a fetch empty after its wait), so
it fetches again, until ``deadline_s``; then it logs a warning and returns what it has,
never less than the reported offsets. Ending early would end a changelog recovery before
its last records: state silently older than what was stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger("tokenbrake.offsets")


async def exact_end_offsets(bootstrap: str | list[str], reported: dict[TopicPartition, int],
                            probe_timeout_ms: int = 500, deadline_s: float = 30.0,
                            **connection: Any) -> dict[TopicPartition, int]:
    """Correct ``reported`` end offsets by reading the last batch of each partition.
    ``connection``: security keyword arguments for aiokafka (see ``clients.security``)."""
    if not any(end and end > 0 for end in reported.values()):
        return dict(reported)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **connection)
    await consumer.start()
    try:
        return await read_to_high_water(consumer, reported, probe_timeout_ms, deadline_s)
    finally:
        await consumer.stop()


async def read_to_high_water(consumer: Any, reported: dict[TopicPartition, int], probe_timeout_ms: int = 500,
                             deadline_s: float = 30.0,
                             clock: Callable[[], float] = time.monotonic) -> dict[TopicPartition, int]:
    """The loop of :func:`exact_end_offsets` on a started consumer (any object with aiokafka's
    ``assign/seek/getmany/position/highwater``)."""
    result = dict(reported)
    tps = [tp for tp, end in reported.items() if end and end > 0]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, reported[tp] - 1)
    pending = set(tps)
    deadline = clock() + deadline_s
    while pending:
        if clock() >= deadline:
            log.warning("end offsets not confirmed within %.0fs; using the last known ones", deadline_s,
                        extra={"partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in pending)})
            break
        batch = await consumer.getmany(*pending, timeout_ms=probe_timeout_ms)
        for tp, records in batch.items():
            if records:
                result[tp] = max(result[tp], records[-1].offset + 1)
        for tp in list(pending):
            high_water = consumer.highwater(tp)  # None until a fetch response for tp arrived
            if high_water is not None and await consumer.position(tp) >= high_water:
                result[tp] = max(result[tp], high_water)
                pending.discard(tp)
    return result


async def first_offset_from(bootstrap: str | list[str], tp: TopicPartition, offset: int, timeout_s: float = 10.0,
                            **connection: Any) -> int | None:
    """The offset of the first record at or after ``offset`` in ``tp`` (the log start when
    ``offset`` is before it), read by a consumer of its own; None if none arrived within
    ``timeout_s``. Tells a real gap in a partition (records removed by retention, a
    transaction's markers) from records that were skipped."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", **connection)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            records = (await consumer.getmany(tp, timeout_ms=500, max_records=1)).get(tp)
            if records:
                return records[0].offset
        return None
    finally:
        await consumer.stop()
