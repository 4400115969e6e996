"""Faust on brokers that report end offsets per record batch (see clients.offsets).

Faust's table recovery reads each changelog partition up to its reported end offset; on
the embedded broker that end can be short, and a restarted worker would resume with
partial state. This patch makes Faust's highwater query exact. It is applied once, at
app build time, and is a no-op on Apache Kafka (the probe finds no further records).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

from clients.offsets import exact_end_offsets

_original = faust_aiokafka.AIOKafkaConsumerThread._highwaters


async def _exact_highwaters(self: Any, partitions: list[Any]) -> Mapping[Any, int]:
    reported = dict(await _original(self, partitions))
    if self.consumer.in_transaction:
        return reported
    bootstrap = self._ensure_consumer()._client._bootstrap_servers
    return await exact_end_offsets(bootstrap, reported)


def apply() -> None:
    if faust_aiokafka.AIOKafkaConsumerThread._highwaters is not _exact_highwaters:
        faust_aiokafka.AIOKafkaConsumerThread._highwaters = _exact_highwaters  # type: ignore[method-assign]
