"""Publish usage events to Kafka with a plain aiokafka producer (what any service could do)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaProducer

from tokenbrake.schemas.codec import dumps


async def publish(bootstrap: str, topic: str, events: Iterable[dict[str, Any]], *, pace: bool = False,
                  batch: int = 1, on_sent: Callable[[int], None] | None = None,
                  skip: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
                  connection: dict[str, Any] | None = None) -> int:
    """Send events keyed by tenant; ``batch`` > 1 packs consecutive same-tenant events into one
    JSON array message (as the reporter does). With ``pace``, wait until each event's ``ts``.
    ``skip`` may rewrite an event or drop it (return None): the demo's kill switch does that.
    ``connection``: TLS/SASL keyword arguments (``Settings.kafka_kwargs()``)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=1 << 20, max_request_size=8 << 20, **(connection or {}))
    await producer.start()
    sent = 0
    pending: dict[str, list[dict[str, Any]]] = {}

    async def flush(tenant: str) -> None:
        items = pending.pop(tenant, [])
        if items:
            value = dumps(items if batch > 1 else items[0])
            await producer.send(topic, value, key=tenant.encode())

    try:
        for event in events:
            event = {k: v for k, v in event.items() if not k.startswith("_")}
            if pace:
                delay = event["ts"] / 1000 - time.time()
                if delay > 0:
                    for tenant in list(pending):
                        await flush(tenant)
                    await asyncio.sleep(delay)
            if skip is not None:
                event = skip(event)
                if event is None:
                    continue
            tenant = str(event.get("tenant_id", ""))
            pending.setdefault(tenant, []).append(event)
            if len(pending[tenant]) >= batch:
                await flush(tenant)
            sent += 1
            if on_sent is not None:
                on_sent(sent)
        for tenant in list(pending):
            await flush(tenant)
        await producer.flush()
    finally:
        await producer.stop()
    return sent
