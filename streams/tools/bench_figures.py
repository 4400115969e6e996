"""How the bench summarises what it measured: rates, latency quantiles and memory growth (pure,
unit-tested in tests/unit/test_bench_quantiles.py)."""

from __future__ import annotations

import math


def steady_rate(first: tuple[float, int] | None, last: tuple[float, int] | None) -> int | None:
    """Events per second between two observations ``(seconds, count)``: the first at or past
    10% of the events, the first at or past 90%. The counts observed, not 10% and 90% of the
    total: the stored count moves in whole flushes (20,000 rows by default), so it can jump
    from below 10% to 40% at once, and ``0.8 * total`` over that time reported 129,489
    events/s stored for a run that stored 16,000 a second. None when the run was too short
    to observe two different points."""
    if first is None or last is None or last[0] <= first[0] or last[1] <= first[1]:
        return None
    return round((last[1] - first[1]) / (last[0] - first[0]))


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
