"""The memory store's dicts, shared with the core (see the package docstring)."""

from __future__ import annotations

from typing import Any


def table_dicts(table: Any) -> tuple[dict[str, Any], dict[str, int]]:
    """(key -> value, key -> partition) of a Faust table on the memory store."""
    store = table.data
    return store.data, store._key_partition
