"""Outcomes from the ``tokenbrake.outcomes`` topic into ClickHouse (``tokenbrake outcomes sink``).

A plain consumer group, separate from the worker: outcomes change no budget and no control,
so they need none of the worker's state. Steps per batch:

1. read up to ``max_records`` messages; a message that is not a valid OutcomeEvent is counted
   and reported (one line), never retried;
2. write the valid outcomes (ReplacingMergeTree by outcome_id: writing twice is harmless);
3. commit the offsets. A crash between 2 and 3 writes the batch again on restart: no loss,
   no double count.

With an embedded chdb directory it cannot run beside the worker (one process per directory):
use ``outcomes load`` from a file there, or a ClickHouse server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from tokenbrake.schemas.codec import loads
from tokenbrake.schemas.outcome import OutcomeEvent
from tokenbrake.streams.finops.outcomes import write_outcomes


@dataclass
class SinkCounts:
    stored: int = 0
    invalid: int = 0


async def sink_outcomes(bootstrap: str, topic: str, group: str, client: Any, db: str, *,
                        exit_when_caught_up: bool, report: Callable[[str], None],
                        stop: Callable[[], bool] = lambda: False) -> SinkCounts:
    """Consume ``topic`` until stopped, or until the end offsets seen at start are reached."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    counts = SinkCounts()
    try:
        await consumer.topics()  # metadata
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise ValueError(f"topic {topic} does not exist")
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        while not stop():
            if exit_when_caught_up and all([await consumer.position(tp) >= ends[tp] for tp in partitions]):
                break
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            outcomes = []
            for tp, messages in batch.items():
                for m in messages:
                    try:
                        outcomes.append(OutcomeEvent.model_validate(loads(m.value)))
                    except (ValidationError, ValueError) as exc:
                        counts.invalid += 1
                        first = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
                        report(f"{tp.topic}[{tp.partition}]@{m.offset}: skipped: "
                               f"{'.'.join(map(str, first['loc'])) or 'message'}: {first['msg']}")
            if batch:
                counts.stored += write_outcomes(client, db, outcomes)
                await consumer.commit()
    finally:
        await consumer.stop()
    return counts
