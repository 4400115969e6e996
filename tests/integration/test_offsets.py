"""faust_internals.end_offsets on the embedded broker, which reports end offsets per record batch."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.integration.conftest import run
from tokenbrake.streams.broker import ensure_topics
from tokenbrake.streams.faust_internals.end_offsets import exact_end_offsets


def test_exact_end_offsets_reads_past_a_batch_reported_by_its_base(broker):
    topic = f"offsets-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(topic, 0)

    async def scenario() -> tuple[int, int]:
        await ensure_topics(broker.bootstrap, {topic: 1})
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=50)
        await producer.start()
        try:
            batch = producer.create_batch()
            for i in range(25):  # one record batch of 25 records: offsets 0..24
                batch.append(key=None, value=str(i).encode(), timestamp=None)
            await (await producer.send_batch(batch, topic, partition=0))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
        await consumer.start()
        try:
            reported = (await consumer.end_offsets([tp]))[tp]
        finally:
            await consumer.stop()
        exact = await exact_end_offsets(broker.bootstrap, {tp: reported}, probe_timeout_ms=100)
        return reported, exact[tp]

    reported, exact = run(scenario())
    assert exact == 25 and reported <= exact
