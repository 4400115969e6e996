"""Exactly-once counting on an at-least-once stream: remember every event_id for a while.

Memory is bounded two ways: ids are kept for ``horizon_minutes`` of event time behind the
watermark, and never more than ``max_entries`` of them (oldest first out). Anything that
falls out moves the *floor*: an event stamped before the floor can no longer be checked,
so it is classified ``LATE`` and sent to the dead-letter topic instead of risking a double
count. Each remembered id records the partition and *position* it was first read at
(``offset << 20 | element``: the element of a JSON array message), which tells a
*redelivery* of the same element after a crash (its ClickHouse row is written again,
idempotently; see the engine for what is counted again) from a *duplicate* sent twice by a
producer, or twice in one message (dropped and counted).

Persistence is per chunk of messages (``streams.chunk``), not per event: the ids first seen in
one chunk from one partition form one *id record*, one changelog record (``state.keys.chunk_key``
-> ``{"ids": [...], "minutes": [...], "positions": [...]}``, three parallel lists: no list per id
in memory). Id records written by earlier versions hold message offsets (``"offsets"``, or
``[[id, minute, offset], ...]``); they are read as the position of the message's first element.
An id record is deleted (tombstoned) once every id in it is older than the floor.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from enum import Enum
from typing import Any

from tokenbrake.streams.state.keys import chunk_key
from tokenbrake.streams.state.store import Store

#: ids per changelog record (~100 KB): far below Kafka's default 1 MB request limit
CHUNK_MAX = 2000
#: the id record's version: 3 holds positions; 2 (``"offsets"``) and 1 (a list of
#: ``[id, minute, offset]``) are still read (:func:`chunk_entries`)
ID_RECORD_VERSION = 3


class Seen(Enum):
    """How the engine saw an event: new, read again, sent twice, or not countable (too old
    to check against the remembered ids, or further ahead of the clock than allowed)."""

    NEW = "new"
    REDELIVERY = "redelivery"
    DUPLICATE = "duplicate"
    LATE = "late"
    FUTURE = "future"


def chunk_entries(chunk: Any) -> Iterable[tuple[str, int, int]]:
    """(event_id, minute, position) of each id in a persisted chunk, in any format."""
    if isinstance(chunk, dict):
        if "positions" in chunk:
            return zip(chunk["ids"], chunk["minutes"], chunk["positions"], strict=True)
        return ((i, m, o << 20 if o >= 0 else o)
                for i, m, o in zip(chunk["ids"], chunk["minutes"], chunk["offsets"], strict=True))
    return ((i, m, o << 20 if o >= 0 else o) for i, m, o in chunk)  # earliest: [[id, minute, offset], ...]


def _where(partition: int, pos: int) -> int:
    """Where an id was first read, as one int (a tuple costs 64 bytes more per id; partitions
    below 2**20); -1 when there is no position (a backtest), which no redelivery can match."""
    return pos << 20 | partition if pos >= 0 else -1


class Deduper:
    """Tells a new event from a duplicate, a redelivery and one too late to check, by event id.

    :meth:`check` per event (``Seen``), :meth:`seal` once per decided chunk of messages (the
    ids first seen become one store record per partition), :meth:`expire` on the watermark,
    :meth:`rebuild_index` after the store is restored. See the module docstring for the bounds.
    """

    def __init__(self, store: Store, horizon_minutes: int, max_entries: int) -> None:
        self.store = store  # chunk_key -> {"ids": [...], "minutes": [...], "positions": [...]}
        self.horizon_minutes = horizon_minutes
        self.max_entries = max_entries
        self.floor_minute: int | None = None
        # Memory is per remembered id (up to max_entries, 2M by default), so it is kept lean:
        # event_id -> where it was read (see _where); ids and their minutes in arrival order
        # in two deques (no tuple per id); one int object per minute (see _minute).
        self._index: dict[str, int] = {}
        self._order_ids: deque[str] = deque()
        self._order_minutes: deque[int] = deque()
        self._minutes: dict[int, int] = {}
        self._pending: dict[int, tuple[list, list, list]] = {}  # partition -> ids, minutes, positions not sealed
        self._chunks: deque[tuple[int, str]] = deque()  # (newest minute in chunk, chunk key)
        #: partition -> the highest position among the restored ids (see :meth:`rebuild_index`)
        self.restored_positions: dict[int, int] = {}

    def check(self, event_id: str, ts_ms: int, partition: int, pos: int) -> Seen:
        where = pos << 20 | partition if pos >= 0 else -1  # _where(), inlined: per event
        seen = self._index.get(event_id)
        if seen is not None:
            return Seen.REDELIVERY if where >= 0 and seen == where else Seen.DUPLICATE
        minute = ts_ms // 60_000
        if self.floor_minute is not None and minute < self.floor_minute:
            return Seen.LATE
        minute = self._minutes.get(minute) or self._minute(minute)
        self._index[event_id] = where
        self._order_ids.append(event_id)
        self._order_minutes.append(minute)
        pending = self._pending.get(partition) or self._pending.setdefault(partition, ([], [], []))
        pending[0].append(event_id)
        pending[1].append(minute)
        pending[2].append(pos)
        if len(self._index) > self.max_entries:
            self._forget_oldest()
        return Seen.NEW

    def _minute(self, minute: int) -> int:
        """The one int object of ``minute`` (ids of one minute share it)."""
        shared = self._minutes.get(minute)
        if shared is None:
            if len(self._minutes) > 4 * self.horizon_minutes:
                self._minutes.clear()  # old minutes: harmless to forget, another object next time
            shared = self._minutes[minute] = minute
        return shared

    def seal(self) -> None:
        """Turn the ids seen since the last call into one chunk per partition (one changelog
        record each). The engine calls it at each drain (a chunk's end, a tick)."""
        for partition, (ids, minutes, positions) in self._pending.items():
            for start in range(0, len(ids), CHUNK_MAX):  # bounded records: Kafka caps request size
                end = start + CHUNK_MAX
                key = chunk_key(partition, positions[start], ids[start])
                self.store.set(key, {"v": ID_RECORD_VERSION, "ids": ids[start:end], "minutes": minutes[start:end],
                                     "positions": positions[start:end]}, partition)
                self._chunks.append((max(minutes[start:end]), key))
        self._pending.clear()

    def _forget_oldest(self) -> None:
        minute = self._order_minutes.popleft()
        self._index.pop(self._order_ids.popleft(), None)
        floor = minute + 1
        if self.floor_minute is None or floor > self.floor_minute:
            self.floor_minute = floor

    def expire(self, watermark_ms: int) -> None:
        limit = watermark_ms // 60_000 - self.horizon_minutes
        while self._order_minutes and self._order_minutes[0] < limit:
            self._forget_oldest()
        if self.floor_minute is None or limit > self.floor_minute:
            self.floor_minute = limit
        while self._chunks and self._chunks[0][0] < self.floor_minute:
            self.store.delete(self._chunks.popleft()[1])

    def rebuild_index(self) -> None:
        """Recreate the id index from persisted chunks (after a restart or rebalance)."""
        self._index.clear()
        self._pending.clear()
        entries, chunks = [], []
        self.restored_positions = {}
        for key, chunk in self.store.items():
            partition = self.store.partition_of(key)
            ids = list(chunk_entries(chunk))
            chunks.append((max((i[1] for i in ids), default=0), key))
            top = self.restored_positions.get(partition, -1)
            for event_id, minute, pos in ids:
                self._index[event_id] = _where(partition, pos)
                entries.append((minute, event_id))
                if pos > top:
                    top = pos
            self.restored_positions[partition] = top
        entries.sort()
        chunks.sort()
        self._order_minutes = deque(self._minute(minute) for minute, _ in entries)
        self._order_ids = deque(event_id for _, event_id in entries)
        self._chunks = deque(chunks)
        self.floor_minute = None

    @property
    def watermark_minute(self) -> int:
        return max(self._order_minutes, default=0)

    def __len__(self) -> int:
        return len(self._index)
