"""Garbage collection for a process whose state is millions of long-lived objects."""

from __future__ import annotations

import gc
import time


class HeapAger:
    """Left to the default collector, every 25% of churn triggers a full collection that walks
    the whole state (0.7 s for 1.2M objects here). Instead, every ``interval_s``, collect the
    young generations (~20 ms) and move the survivors to the permanent generation, which the
    collector no longer walks; refcounting still frees them when the state drops them. The
    price: a reference cycle that turns to garbage after it was frozen is never collected
    (the state itself holds no cycles)."""

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
