"""The chunk: messages decided since the state was last persisted (see streams.worker).

A *batch* is what ``take_batches`` hands the agent at once (whatever the channel holds); a
*chunk* spans batches and ends every ``chunk_events`` events or ``chunk_max_s`` seconds:
its changed state is written to the changelogs once, its rows handed to the sink, and its
messages acknowledged once both are stored.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


class Chunk:
    """Messages decided since the state was last persisted: ended every ``chunk_events`` events
    or ``chunk_max_s`` seconds (small batches share one state write: fewer changelog records)."""

    __slots__ = ("generation", "taken", "rows", "published", "forwarded", "processed", "started")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.taken: list[Any] = []
        self.rows: list[tuple] = []  # usage rows, one UsageSource per message
        self.published: list[Any] = []  # controls already published, still to be stored
        self.forwarded: list[asyncio.Future] = []  # deliveries of events sent on to their tenant's partition
        self.processed = 0
        self.started = time.monotonic()
