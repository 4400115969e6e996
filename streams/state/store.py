"""A dict that remembers what changed, so the adapter persists each changed key once per batch.

The core writes only through :class:`Store`; the Faust adapter copies ``changes()`` into the
table changelogs (one record per changed key per batch, not per event) and a restarted
worker rebuilds the core from the tables with :meth:`load`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

#: Marks a deleted key in ``changes()``; the adapter writes a tombstone for it.
DELETED = None


#: counters per aggregate value, then the position (see :data:`POS`)
WIDTH = 8
#: index of the *position* in a counter list: ``offset << 20 | element`` of the last event
#: added into it, in its partition's order (-1 when unknown). A restarted worker re-reads the
#: messages after the committed offset; an event at or below a list's position is already in
#: it (its chunk's records reached the broker), so it is not added again. That makes every
#: aggregate key exactly-once on its own, whichever records of a chunk a crash let through.
POS = WIDTH


def new_counters() -> list[int]:
    return [0, 0, 0, 0, 0, 0, 0, 0, -1]


def add_into(counters: list[list[int]], vector: tuple[int, ...], pos: int) -> None:
    """Add an 8-counter ``vector`` to each of ``counters`` in place and set their position:
    the aggregation hot path (every event, a dozen lists), so it is written out flat."""
    c0, c1, c2, c3, c4, c5, c6, c7 = vector
    for current in counters:
        current[8] = pos
        current[0] += c0
        current[1] += c1
        current[2] += c2
        current[3] += c3
    if c4 or c5 or c6 or c7:  # most calls have no cached or reasoning tokens, no error, no retry
        for current in counters:
            current[4] += c4
            current[5] += c5
            current[6] += c6
            current[7] += c7


class Store:
    """Values by key, each owned by a partition, with the keys changed since :meth:`changes`.

    ``record`` (optional) is the persisted form of the values when it differs from the one
    held in memory: its ``dump`` makes a value's record (:meth:`encode`, applied by the adapter
    to what :meth:`changes` returns), its ``read`` turns a persisted record (of any version it
    knows) back into a value on :meth:`load` and :meth:`attach`. Without it the values are
    their own records."""

    __slots__ = ("name", "data", "_changed", "_partition", "_default_partition", "epoch", "marks", "record")

    def __init__(self, name: str, record: Any = None) -> None:
        self.name = name
        self.record = record
        self.data: dict[str, Any] = {}
        self._changed: dict[str, int] = {}
        self._partition: dict[str, int] = {}
        self._default_partition = 0
        #: moves whenever a value object may have been replaced or dropped: a caller holding
        #: references to values must fetch them again when it differs
        self.epoch = 0
        #: moves whenever :meth:`changes` takes the change marks: a caller updating values in
        #: place must mark their keys again (:meth:`mark`) when it differs
        self.marks = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def __len__(self) -> int:
        return len(self.data)

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self.data.items())

    def set(self, key: str, value: Any, partition: int | None = None) -> None:
        """Set ``key``; ``partition`` is the source partition whose changelog owns it."""
        if key in self.data:
            self.epoch += 1
        self.data[key] = value
        if partition is None:
            partition = self._partition.get(key, self._default_partition)
        self._partition[key] = partition
        self._changed[key] = partition

    def counters(self, keys: list[str], partition: int) -> tuple[list[list[int]], list[str]]:
        """The counter lists of ``keys`` (zeros created when absent, owned by ``partition``),
        each marked changed: the caller adds to them in place until :attr:`epoch` moves, and
        marks them again (:meth:`mark`) when :attr:`marks` moves.
        Returns (the lists, the keys created)."""
        data, owners, changed = self.data, self._partition, self._changed
        out, created = [], []
        for key in keys:
            current = data.get(key)
            if current is None:
                current = data[key] = [0, 0, 0, 0, 0, 0, 0, 0, -1]
                owners[key] = changed[key] = partition
                created.append(key)
            else:
                changed[key] = owners.get(key, partition)
            out.append(current)
        return out, created

    def add_counters(self, keys: list[str], vector: tuple[int, ...], partition: int, pos: int) -> list[str]:
        """Add an 8-counter ``vector`` to each key's counters (created at ``vector`` when absent,
        owned by ``partition``) and set their position. Returns the keys created."""
        data, owners, changed = self.data, self._partition, self._changed
        created, existing = [], []
        for key in keys:
            current = data.get(key)
            if current is None:
                data[key] = [*vector, pos]
                owners[key] = changed[key] = partition
                created.append(key)
            else:
                existing.append(current)
                changed[key] = owners.get(key, partition)
        add_into(existing, vector, pos)
        return created

    def add_missing(self, keys: list[str], vector: tuple[int, ...], partition: int, pos: int) -> list[str]:
        """:meth:`add_counters` for an event that may already be in some of the lists (a
        re-read after a restart): only lists whose position is below ``pos`` take it.
        Returns the keys created."""
        lists, created = self.counters(keys, partition)
        add_into([c for c in lists if (c[POS] if len(c) > WIDTH else -1) < pos], vector, pos)
        return created

    def mark(self, keys: list[str], partition: int) -> None:
        """Mark existing ``keys`` changed (their values were updated in place)."""
        owners, changed = self._partition, self._changed
        for key in keys:
            changed[key] = owners.get(key, partition)

    def partition_of(self, key: str) -> int:
        return self._partition.get(key, self._default_partition)

    def delete(self, key: str) -> None:
        if key in self.data:
            del self.data[key]
            self.epoch += 1
            self._changed[key] = self._partition.pop(key, self._default_partition)

    def encode(self, value: Any) -> Any:
        """The persisted record of a value from :meth:`changes` (DELETED stays DELETED)."""
        return value if value is None or self.record is None else self.record.dump(value)

    def changes(self) -> list[tuple[str, Any, int]]:
        """(key, value or DELETED, partition) for every key changed since the last call: the
        values themselves (the adapter makes each one's record as it serialises it, see
        :meth:`encode`, so no second copy of a chunk's changes is alive at once)."""
        data = self.data
        out = [(key, data.get(key, DELETED), part) for key, part in self._changed.items()]
        self._changed.clear()
        self.marks += 1
        return out

    def attach(self, data: dict[str, Any], partitions: dict[str, int]) -> None:
        """Share the dicts of a Faust memory store (its data and key -> partition map), so
        the state is held once: the worker's table *is* the core's store."""
        self.data = data
        self._partition = partitions
        self._changed.clear()
        self.epoch += 1
        if self.record is not None:  # the table holds the records as recovered from the changelog
            read = self.record.read
            for key, value in data.items():
                data[key] = read(value)

    def load(self, items: Iterable[tuple[str, Any, int]]) -> None:
        """Replace the contents with persisted (key, value, partition) items."""
        self.data.clear()
        self._partition.clear()
        self._changed.clear()
        self.epoch += 1
        read = (lambda value: value) if self.record is None else self.record.read
        for key, value, part in items:
            self.data[key] = read(value)
            self._partition[key] = part
