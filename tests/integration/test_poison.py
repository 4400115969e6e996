"""Issue 11 (5., 6.): no message stops the pipeline. Each hostile message the operator probe
found crashing the usage agent is dead-lettered with its reason, the valid events beside it
are counted exactly once, and the worker goes on deciding."""

from __future__ import annotations

import hashlib
import json

from aiokafka import AIOKafkaProducer

from tests.integration.conftest import consume_all, event_json, msg, run
from tokenbrake.schemas.codec import dumps
from tokenbrake.streams.emit.dead_letter import DLQ_MAX_BYTES

HUGE_TS = 10**30


async def _produce_large(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=32 * 1024 * 1024)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def test_poison_messages_are_dead_lettered_and_the_worker_goes_on(worker_env, broker):
    worker = worker_env().start()
    over_limit = b"[" + b" " * (8 * 1024 * 1024) + dumps(event_json()) + b"]"  # just over 8 MB
    messages = [  # json, not orjson: the integers exceed 64 bits
        (b"acme", json.dumps(event_json(ts=HUGE_TS)).encode()),  # OverflowError in datetime before
        (b"acme", json.dumps([event_json(), event_json(ts=HUGE_TS), event_json()]).encode()),  # 2 valid beside it
        (b"acme", over_limit),
    ]
    run(_produce_large(broker.bootstrap, worker.topic_usage, messages))
    run(_produce_large(broker.bootstrap, worker.topic_usage, [msg(event_json()) for _ in range(3)]))
    status = worker.wait_counted(5)  # 2 beside the bad element + 3 sent after the poison
    assert status["counts"]["new"] == 5 and worker.proc.poll() is None

    dlq = run(consume_all(broker.bootstrap, worker.topic_dlq, expect=3))
    by_reason = sorted(((dict(r.headers)["tokenbrake-reason"].decode(), r) for r in dlq), key=lambda x: x[0])
    assert [reason for reason, _ in by_reason] == ["invalid_event", "invalid_event", "too_large"]
    too_large = dict(by_reason[2][1].headers)
    assert len(by_reason[2][1].value) == DLQ_MAX_BYTES and too_large["tokenbrake-truncated"] == b"true"
    assert too_large["tokenbrake-original-bytes"] == str(len(over_limit)).encode()
    assert too_large["tokenbrake-original-sha256"] == hashlib.sha256(over_limit).hexdigest().encode()
    assert all(b"out of range" in dict(r.headers)["tokenbrake-error"] or b"integer" in dict(r.headers)[
        "tokenbrake-error"] for reason, r in by_reason[:2])
    worker.wait_flushed(5)
    assert worker.status()["worker"]["last_message_age_s"] >= 0
