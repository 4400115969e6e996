"""The worker's own health, in ClickHouse: one ``pipeline_health`` row every
``TOKENBRAKE_PIPELINE_HEALTH_INTERVAL_S`` (60 s) per worker, through the same sink as the usage
rows, for the Enforcement dashboard (dead letters by reason, worker lag, sink buffer).

Why rows and not only ``/metrics``: the dashboards read ClickHouse alone (no Prometheus
needed), and the figures stay next to the spend they explain. A row holds the consumer lag
summed over the worker's assigned partitions (messages past the committed offsets), the sink's
buffered rows, the age of its oldest one and its failed writes so far, and the records
dead-lettered **since the previous row**, by reason (so a sum over any time range is the
volume in it, across restarts). What it costs: while ClickHouse is down the rows wait in the
buffer like everything else and arrive, with their own times, when it is back (the usage
heartbeat alert is the one that fires during the outage).
"""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from tokenbrake.streams.metrics import consumer_lag

log = logging.getLogger("tokenbrake.health")

HEALTH_COLUMNS = ["ts", "worker", "lag_messages", "buffered_rows", "oldest_buffered_s", "sink_failures",
                  "dead_letters"]


class PipelineHealth:
    """Builds the rows; remembers what was dead-lettered up to the last one."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self._reported: Counter[str] = Counter()

    def row(self, ts: datetime, lag: int, sink: dict[str, Any], dead_letters: Counter[str]) -> list[Any]:
        """One row; ``dead_letters`` are the counts since start, the row holds the increase.

        >>> h = PipelineHealth("w1")
        >>> sink = {"buffered_rows": 3, "oldest_buffered_s": 0.5, "failures": 0}
        >>> h.row(datetime(2026, 1, 1, tzinfo=UTC), 7, sink, Counter(not_json=2))[2:]
        [7, 3, 0.5, 0, {'not_json': 2}]
        >>> h.row(datetime(2026, 1, 1, tzinfo=UTC), 0, sink, Counter(not_json=2, late=1))[-1]
        {'late': 1}
        """
        since = {reason: n - self._reported[reason] for reason, n in dead_letters.items() if n > self._reported[reason]}
        self._reported = Counter(dead_letters)
        return [ts, self.worker, lag, sink["buffered_rows"], float(sink["oldest_buffered_s"]), sink["failures"],
                since]


def install_health(runtime: Any) -> PipelineHealth | None:
    """A timer that hands one row to the sink every interval (nothing acknowledged waits on it)."""
    every = runtime.settings.pipeline_health_interval_s
    if not every:
        return None
    health = PipelineHealth(f"{socket.gethostname()}:{os.getpid()}")

    @runtime.app.timer(interval=every)
    async def pipeline_health() -> None:
        if runtime.attached != runtime.generation:  # starting or rebalancing: the next one reports
            return
        try:
            lag = sum(n for _, n in consumer_lag(runtime.app))
            row = health.row(datetime.now(UTC), lag, runtime.sink.stats(), runtime.meter.dead_letters)
        except Exception:  # never let a health row stop the worker
            log.exception("pipeline health row failed")
            return
        runtime.sink.add_rows("pipeline_health", HEALTH_COLUMNS, [row], lambda: None)

    return health
