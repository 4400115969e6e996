"""Records the worker cannot count, to the dead-letter topic (see streams.emit.dead_letter)."""

from __future__ import annotations

import logging
from typing import Any

from tokenbrake.streams.emit.dead_letter import dead_letter_record
from tokenbrake.streams.ingest.decode import Rejected

log = logging.getLogger("tokenbrake.worker")


class DeadLetters:
    def __init__(self, topic: Any, meter: Any, stats: dict[str, int]) -> None:
        self.topic, self.meter, self.stats = topic, meter, stats

    async def send(self, msg: Any, rejected: Rejected) -> None:
        """With reason, error and, when there is one, the source message (``msg``)."""
        self.stats["dead_lettered"] += 1
        self.meter.dead_lettered(rejected.reason)
        source = None
        if msg is not None:
            log.debug("dead-lettered", extra={"reason": rejected.reason, "partition": msg.partition,
                                              "offset": msg.offset})
            source = f"{msg.topic}/{msg.partition}/{msg.offset}"
        value, headers = dead_letter_record(rejected.reason, rejected.error, rejected.payload, source)
        await self.topic.send(key=msg.key if msg is not None else None, value=value, headers=headers)

    async def unstorable(self, refused: list[tuple[bytes, str]]) -> None:
        """Usage events ClickHouse refused to store: counted in the totals, not in usage_events."""
        log.error("%d usage events could not be stored in ClickHouse; dead-lettered (reason unstorable): %s",
                  len(refused), refused[0][1][:500])
        for event, error in refused:
            await self.send(None, Rejected("unstorable", error, event))
