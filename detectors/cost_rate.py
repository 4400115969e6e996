"""Runaway cost per second: a scope's spend rate jumps far above its recent baseline."""

from __future__ import annotations

import statistics
from collections import defaultdict, deque
from collections.abc import Iterator
from decimal import Decimal

from river import base

from tokenbrake.detectors.baseline import EWBaseline
from tokenbrake.detectors.buckets import MINUTE_MS, Closed, Judged, nanos_to_usd
from tokenbrake.detectors.tails import CountRate, binomial_upper_nats, poisson_upper_nats

#: the window of minutes ending with the closed one that is scored too (quiet scopes)
COST_WINDOW_MINUTES = 5

class CostRate(base.AnomalyDetector):
    """Scores the cost per second of one tenant x feature, each closed minute.

    ``x`` holds the closed minute's ``requests`` and ``costs`` (a sample of its call
    costs, nano-USD; or ``median_call_nanos``), ``seconds`` (60), and optionally the same
    for a longer window ending with it (``window_requests``, ``window_costs``,
    ``window_seconds``: ``COST_WINDOW_MINUTES``), so a quiet scope gathers evidence over minutes while
    a busy one is judged on its last minute alone. Each is scored; the higher counts.

    Cost per second = calls per second x cost per call, and the score needs both:

    - **effect**: (calls / expected calls) x (median call cost / its baseline) reaches
      ``factor`` (3.0: cost per second up 200%); the median, so one costly call (the
      per-call cap's business) moves nothing. Not the seeds' "300% above baseline" (4.0):
      one minute of a 5x runaway, with Poisson noise on its calls and its median, can
      measure 4x, and it must page in its first full minute;
    - **significance**: either the call count is too high for a Poisson count at the
      learned calls per minute (divided by ``dispersion`` for bursty clients), or too many
      calls cost over ``call_factor`` x the baseline median for the learned share of such
      calls (binomial); ``-ln p >= threshold_nats``.

    The expected calls per minute is a fast exponentially weighted mean (``alpha`` 0.05:
    the last ~20 minutes), which follows the daily and weekly curve (it moves a few percent
    in 20 minutes) while a runaway is a step; flagged minutes are never learned, so the step
    does not become the baseline, and a minute is learned with its calls clipped at
    ``2 x`` the baseline, so a rise that stays just under the bar is learned only slowly
    (a real, lasting rise is learned in about 15 minutes). A 5x loop on a scope with 100
    calls a minute scores
    thousands of nats in its first full minute. Under ``min_usd_per_minute`` nothing flags;
    before ``warmup`` learned minutes nothing is scored. The engine issues a control
    (the kill switch) when it fires.

    Parameters
    ----------
    warmup
        Minutes learned before scoring.
    alpha
        Weight of a new minute in the calls-per-minute baseline.
    cost_alpha
        Weight of a new minute in the median-cost baseline and the share of costly calls.
    factor
        Multiple of the baseline cost per second that flags.
    call_factor
        A call costing this multiple of the baseline median counts as costly.
    threshold_nats
        ``-ln`` of the p-value bound that flags (13.8 ~ 1e-6).
    dispersion
        Overdispersion of call counts (bursty clients).
    min_usd_per_minute
        Spend per minute below which nothing is flagged.
    min_requests
        Calls in a minute below which its median cost is not learned.

    Examples
    --------
    >>> det = CostRate()
    >>> for _ in range(40):
    ...     det.learn_one({"requests": 50, "median_call_nanos": 4_000_000, "seconds": 60})
    >>> normal = det.score_one({"requests": 60, "median_call_nanos": 4_500_000, "seconds": 60})
    >>> switched = det.score_one({"requests": 50, "median_call_nanos": 60_000_000, "seconds": 60})
    >>> looping = det.score_one({"requests": 250, "median_call_nanos": 4_000_000, "seconds": 60})
    >>> normal < 1.0 <= min(switched, looping)
    True

    """

    def __init__(self, warmup: int = 30, alpha: float = 0.05, cost_alpha: float = 0.02, factor: float = 3.0,
                 call_factor: float = 4.0, threshold_nats: float = 13.8, dispersion: float = 2.0,
                 min_usd_per_minute: float = 0.005, min_requests: int = 3) -> None:
        self.warmup = warmup
        self.alpha = alpha
        self.cost_alpha = cost_alpha
        self.factor = factor
        self.call_factor = call_factor
        self.threshold_nats = threshold_nats
        self.dispersion = dispersion
        self.min_usd_per_minute = min_usd_per_minute
        self.min_requests = min_requests
        self._calls = EWBaseline(alpha)
        self._per_call = EWBaseline(cost_alpha)
        self._costly = CountRate(cost_alpha)

    @staticmethod
    def _median(x: dict, prefix: str = "") -> float:
        costs = x.get(f"{prefix}costs")
        if costs:
            return float(statistics.median(costs))
        median = x.get(f"{prefix}median_call_nanos")
        if median is None:
            median = x.get(f"{prefix}cost_nanos", 0) / max(x.get(f"{prefix}requests", 1), 1)
        return float(median)

    def _count_costly(self, x: dict, prefix: str = "") -> tuple[int, int]:
        bar = self.call_factor * self._per_call.mean
        costs = x.get(f"{prefix}costs")
        if costs:
            return sum(1 for c in costs if c > bar), len(costs)
        requests = x.get(f"{prefix}requests", 0)
        return (requests if self._median(x, prefix) > bar else 0), requests

    def learn_one(self, x: dict) -> None:
        requests = x.get("requests", 0)
        if requests >= self.min_requests:
            if self._per_call.n >= self.warmup:
                self._costly.update(*self._count_costly(x))
            self._per_call.update(self._median(x))
        per_minute = requests * 60 / max(x.get("seconds", 60), 1)
        if self._calls.n >= self.warmup:
            per_minute = min(per_minute, 2 * max(self._calls.mean, 1.0))
        self._calls.update(per_minute)

    def _score(self, x: dict, prefix: str) -> float:
        requests, seconds = x.get(f"{prefix}requests", 0), max(x.get(f"{prefix}seconds", 60), 1)
        median = self._median(x, prefix)
        if requests <= 0 or median * requests * 60 / seconds < self.min_usd_per_minute * 1e9:
            return 0.0
        expected = max(self._calls.mean, 0.2) * seconds / 60
        effect = (requests / expected) * (median / max(self._per_call.mean, 1.0)) / self.factor
        costly, sampled = self._count_costly(x, prefix)
        evidence = max(poisson_upper_nats(requests, expected, self.dispersion),
                       binomial_upper_nats(costly, sampled, max(self._costly.rate, 0.02)))
        return min(effect, evidence / self.threshold_nats)

    def score_one(self, x: dict) -> float:
        if self._per_call.n < self.warmup:
            return 0.0
        score = self._score(x, "")
        if x.get("window_requests"):
            score = max(score, self._score(x, "window_"))
        return score

    def describe(self, x: dict, observed: Decimal) -> str:
        """The figures an alert's summary adds: the minute's spend against the baseline."""
        return f"${observed}/min against a baseline of ${self.baseline_usd_per_minute:.4f}/min"

    def control_reason(self, score: float) -> tuple[Decimal, str]:
        """The threshold and detail of the control a flagged scope gets (its cost rate against the baseline)."""
        return Decimal(str(round(self.factor, 4))), f"cost rate {score * self.factor:.1f}x its baseline"

    @property
    def baseline_usd_per_minute(self) -> float:
        return self._per_call.mean * self._calls.mean / 1e9


def features_of(closed: Closed, memory: dict) -> Iterator[Judged]:
    """Each tenant x feature of a closed ``CALLS_MINUTE`` (its models summed): the minute, and the
    window of ``COST_WINDOW_MINUTES`` ending with it (``memory``: scope -> the window's minutes as
    (start, cost, calls, sampled call costs)). A late minute is skipped: its spend is counted by
    the aggregates, its rate is history."""
    start, call_costs = closed.start, closed.beside
    per_feature: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for (tenant, feature, _), counters in closed.counters.items():
        per_feature[(tenant, feature)][0] += counters[3]
        per_feature[(tenant, feature)][1] += counters[0]
    for scope, (cost, calls) in per_feature.items():
        window = memory.setdefault(scope, deque())
        if window and start <= window[-1][0]:
            continue
        window.append((start, cost, calls, call_costs.get(scope, [])))
        while window[0][0] <= start - COST_WINDOW_MINUTES * MINUTE_MS:
            window.popleft()
        span = max(1, min(COST_WINDOW_MINUTES, (start - window[0][0]) // MINUTE_MS + 1))
        total, window_calls = sum(w[1] for w in window), sum(w[2] for w in window)
        # the closed minute alone (busy scopes), and the window ending with it (quiet ones)
        features = {"cost_nanos": cost, "seconds": 60, "requests": calls, "costs": call_costs.get(scope, [])}
        if span > 1:
            features.update(window_cost_nanos=total, window_seconds=60 * span, window_requests=window_calls,
                            window_costs=[c for w in window for c in w[3]])
        yield scope, features, nanos_to_usd(cost)
