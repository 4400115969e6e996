"""Which partition of the usage topic a tenant's events belong to.

A tenant's state (totals, budget levels, dedupe ids) lives with one partition, so one worker
owns it. Producers are asked to key messages by ``tenant_id`` with Kafka's default
partitioner (murmur2, as the Java client and aiokafka do); librdkafka-based clients (kcat,
confluent-kafka, Go and Node clients) default to another hash, and a message can hold
several tenants. Events found on another partition than their tenant's are forwarded there
by the worker, not counted where they landed: with several workers, one tenant's spend would
otherwise be split between them and each would enforce against a part of it.
"""

from __future__ import annotations

from typing import Any

from aiokafka.partitioner import murmur2


class TenantRouter:
    """The tenant's partition, as Kafka's default partitioner picks it for key ``tenant_id``.

    >>> from aiokafka.partitioner import DefaultPartitioner
    >>> router = TenantRouter(4)
    >>> all(router.partition(t) == DefaultPartitioner()(t.encode(), [0, 1, 2, 3], []) for t in ("acme", "t07"))
    True
    """

    def __init__(self, partitions: int) -> None:
        if partitions < 1:
            raise ValueError("a topic has at least one partition")
        self.partitions = partitions
        self._cache: dict[str, int] = {}

    def all_on(self, events: list[Any], here: int) -> bool:
        """Every event belongs to partition ``here`` (the common case, checked per message)."""
        route = self.partition
        return all(route(ev.tenant_id) == here for ev in events)

    def split(self, events: list[Any], here: int) -> tuple[list[Any], dict[tuple[int, str], list[Any]]]:
        """(the events that belong to partition ``here``, {(partition, tenant): the others})."""
        stay: list[Any] = []
        away: dict[tuple[int, str], list[Any]] = {}
        for ev in events:
            target = self.partition(ev.tenant_id)
            if target == here:
                stay.append(ev)
            else:
                away.setdefault((target, ev.tenant_id), []).append(ev)
        return stay, away

    def partition(self, tenant: str) -> int:
        found = self._cache.get(tenant)
        if found is None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            found = self._cache[tenant] = (murmur2(tenant.encode()) & 0x7FFFFFFF) % self.partitions
        return found
