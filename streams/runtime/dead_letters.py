"""Records the worker cannot count, to the dead-letter topic (see streams.emit.dead_letter)."""

from __future__ import annotations

import logging
from typing import Any

from tokenbrake.schemas.codec import dumps
from tokenbrake.streams.emit.dead_letter import dead_letter_record
from tokenbrake.streams.ingest.decode import Rejected
from tokenbrake.streams.ingest.dedupe import Seen

log = logging.getLogger("tokenbrake.worker")


def uncountable(seen: Seen, event: Any, settings: Any) -> Rejected:
    """Why a valid event the engine would not count (``Seen.LATE`` or ``Seen.FUTURE``) goes to
    the dead-letter topic: what to do about it, with the setting that decided."""
    if seen is Seen.LATE:
        return Rejected("late", f"event {event.event_id} is older than the dedupe horizon "
                        f"({settings.dedupe_horizon}); it cannot be counted exactly once", dumps(event))
    return Rejected("future", f"event {event.event_id} is stamped more than {settings.max_future_s}s ahead of "
                    "the worker's clock (TOKENBRAKE_MAX_FUTURE_S); fix the producer's clock and replay it",
                    dumps(event))


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
