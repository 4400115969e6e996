"""Exactly-once counting on an at-least-once stream: remember every event_id for a while.

Memory is bounded two ways: ids are kept for ``horizon_minutes`` of event time behind the
watermark, and never more than ``max_entries`` of them (oldest first out). Anything that
falls out moves the *floor*: an event stamped before the floor can no longer be checked,
so it is classified ``LATE`` and sent to the dead-letter topic instead of risking a double
count. Each remembered id records the (partition, offset) it was first read at, which tells
a *redelivery* of the same message after a crash (its ClickHouse row is written again,
idempotently) from a *duplicate* sent twice by a producer (dropped and counted).
"""

from __future__ import annotations

from collections import deque
from enum import Enum

from streams.aggregate.store import Store


class Seen(Enum):
    NEW = "new"
    REDELIVERY = "redelivery"
    DUPLICATE = "duplicate"
    LATE = "late"


class Deduper:
    def __init__(self, store: Store, horizon_minutes: int, max_entries: int) -> None:
        self.store = store
        self.horizon_minutes = horizon_minutes
        self.max_entries = max_entries
        self.floor_minute: int | None = None
        self._order: deque[tuple[int, str]] = deque()

    def check(self, event_id: str, ts_ms: int, partition: int, offset: int) -> Seen:
        seen = self.store.data.get(event_id)
        if seen is not None:
            same_message = offset >= 0 and seen[1] == partition and seen[2] == offset
            return Seen.REDELIVERY if same_message else Seen.DUPLICATE
        minute = ts_ms // 60_000
        if self.floor_minute is not None and minute < self.floor_minute:
            return Seen.LATE
        self.store.set(event_id, [minute, partition, offset], partition)
        self._order.append((minute, event_id))
        if len(self._order) > self.max_entries:
            self._forget_oldest()
        return Seen.NEW

    def _forget_oldest(self) -> None:
        minute, event_id = self._order.popleft()
        self.store.delete(event_id)
        floor = minute + 1
        if self.floor_minute is None or floor > self.floor_minute:
            self.floor_minute = floor

    def expire(self, watermark_ms: int) -> None:
        limit = watermark_ms // 60_000 - self.horizon_minutes
        while self._order and self._order[0][0] < limit:
            self._forget_oldest()
        if self.floor_minute is None or limit > self.floor_minute:
            self.floor_minute = limit

    def rebuild_index(self) -> None:
        self._order = deque(sorted((value[0], key) for key, value in self.store.data.items()))
        self.floor_minute = None

    def __len__(self) -> int:
        return len(self._order)
