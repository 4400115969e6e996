"""Where the consumer stands, for lag (see the package docstring)."""

from __future__ import annotations

from typing import Any


def committed_positions(consumer: Any) -> dict[Any, int | None]:
    """Topic partition -> the next offset to read as Faust last committed it (None: never)."""
    return dict(consumer._committed_offset)
