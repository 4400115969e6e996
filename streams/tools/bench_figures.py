"""How the bench summarises what it measured: latency quantiles and memory growth (pure,
unit-tested in tests/unit/test_bench_quantiles.py)."""

from __future__ import annotations

import math


def rss_growth(at_half: float | None, at_end: float | None, total: int) -> float | None:
    """MB the worker's RSS grows per 100,000 events over the second half of a run (the state
    of users first seen, dedupe ids). The worker alone: its writer process starts during the
    run, and counting it (a one-off ~500 MB with chdb) made one-event runs of 50,000 events
    report 1,500 MB per 100,000."""
    if at_half is None or at_end is None or total <= 0:
        return None
    return round((at_end - at_half) / (total / 2) * 100_000, 1)


def nearest_rank(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of ascending ``ordered``: its ceil(q * n)-th smallest
    (of 200 probes the p99 is the 198th; of 40 it would be the maximum)."""
    return ordered[max(0, math.ceil(len(ordered) * q) - 1)]
