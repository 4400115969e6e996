"""End offsets that stay right on brokers that report them per record *batch*.

The embedded broker (Tansu) answers ListOffsets(latest) with the base offset of the last
record batch + 1, not the last offset + 1, whenever a producer packed several records in
one batch. Code that reads "up to the end" must therefore read on past the reported end
until the broker has nothing more. On Apache Kafka the probe finds nothing and changes
nothing.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition


async def exact_end_offsets(bootstrap: str | list[str], reported: dict[TopicPartition, int],
                            probe_timeout_ms: int = 500) -> dict[TopicPartition, int]:
    """Correct ``reported`` end offsets by reading the last batch of each partition."""
    tps = [tp for tp, end in reported.items() if end and end > 0]
    if not tps:
        return dict(reported)
    result = dict(reported)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, reported[tp] - 1)
        pending = set(tps)
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=probe_timeout_ms)
            if not batch:
                break
            for tp, records in batch.items():
                if records:
                    result[tp] = max(result[tp], records[-1].offset + 1)
    finally:
        await consumer.stop()
    return result

