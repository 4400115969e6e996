"""Events found on another partition than their tenant's go on to it (see
streams.runtime.routing): they are decided where their tenant's state lives."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tokenbrake.schemas.codec import dumps
from tokenbrake.streams.faust_internals.changelog import aiokafka_producer
from tokenbrake.streams.logs import LogBudget
from tokenbrake.streams.runtime.routing import TenantRouter

log = logging.getLogger("tokenbrake.worker")


class Forwarder:
    def __init__(self, app: Any, router: TenantRouter, topic: str, stats: dict[str, int]) -> None:
        self.app, self.router, self.topic, self.stats = app, router, topic, stats
        self._log = LogBudget(per_window=1, window_s=60.0)

    async def forward(self, msg: Any, events: list[Any], deliveries: list[asyncio.Future]) -> list[Any]:
        """Send events that belong to another partition (see streams.runtime.routing) on to it,
        keyed by tenant; they are decided when they arrive there. The message is acknowledged
        only once they are delivered. Returns the events that stay."""
        stay, away = self.router.split(events, msg.partition)
        producer = aiokafka_producer(self.app)
        for (target, tenant), moved in away.items():
            deliveries.append(await producer.send(self.topic, dumps(moved), key=tenant.encode(), partition=target))
            self.stats["forwarded"] += len(moved)
        if self._log.allow():
            log.warning("events arrived on another partition than their tenant's and were forwarded: producers "
                        "should key messages by tenant_id with Kafka's default (murmur2) partitioner",
                        extra={"forwarded_total": self.stats["forwarded"], "topic": msg.topic,
                               "partition": msg.partition})
        return stay
