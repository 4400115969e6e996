"""Garbage collection for a process whose state is millions of long-lived objects."""

from __future__ import annotations

import gc
import time

#: collection thresholds (generation 0 allocations, then collections of the younger generation):
#: with CPython's default (700, 10, 10) the worker collected its young objects every 700 container
#: allocations, and most of what a chunk allocates (its changelog records, rollup copies, the
#: tuples of its changes) lives longer than that, so it was walked again and promoted before it
#: died. 20,000 lets a chunk's short-lived objects die of refcounting first: 15-25% less CPU per
#: event in the pure core and the changelog writes (measured offline on the bench's events).
THRESHOLDS = (20_000, 50, 1000)


def tune_gc() -> None:
    """Set the process's collection :data:`THRESHOLDS`: process-wide, so called once where a
    long-lived process starts (the worker in ``streams.runner``, the ClickHouse writer's child
    in ``streams.sink.process``), never as the side effect of building an object."""
    gc.set_threshold(*THRESHOLDS)


class HeapAger:
    """Left to the default collector, every 25% of churn triggers a full collection that walks
    the whole state (0.7 s for 1.2M objects here). Instead, every ``interval_s``, collect the
    young generations (~20 ms) and move the survivors to the permanent generation, which the
    collector no longer walks; refcounting still frees them when the state drops them. The
    price: a reference cycle that turns to garbage after it was frozen is never collected
    (the state itself holds no cycles). The thresholds are :func:`tune_gc`'s, not this class's."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._frozen_at: float | None = None  # never aged yet: the first call ages, whatever the clock reads

    def maybe_age(self) -> bool:
        """Collect and freeze if ``interval_s`` has passed since the last time."""
        now = time.monotonic()  # an arbitrary origin (boot, on Linux): only differences mean anything
        if self._frozen_at is not None and now - self._frozen_at < self.interval_s:
            return False
        self._frozen_at = now
        gc.collect(1)
        gc.freeze()
        return True
