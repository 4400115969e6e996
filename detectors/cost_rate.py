"""Runaway cost per second: a scope's spend rate jumps far above its recent baseline."""

from __future__ import annotations

import math

from river import base

from detectors.baseline import EWBaseline


class CostRate(base.AnomalyDetector):
    """Scores the cost per second of one tenant x feature over a short sliding window.

    ``x`` holds ``requests`` (calls in the window), ``median_call_nanos`` (the median cost
    of those calls, nano-USD), ``seconds`` (the window, 5 minutes sliding by the minute)
    and ``cost_nanos`` (their total). Cost per second = cost per call x calls per second,
    and each factor is judged robustly:

    - the median cost per call against its baseline (a model switch makes every call
      dearer; one heavy-tailed call moves the median not at all);
    - the call count against its baseline, counted only when the excess is significant
      for a Poisson count (``n - lam >= z * sqrt(lam) + 2``), so a quiet scope going from
      one call to four is not a runaway, while an agent loop is.

    The score is their product over ``factor`` (4.0 = 300% above): 1.0 or more flags.
    ``enough(x)`` is False with fewer than ``min_requests`` calls: such windows are
    neither scored nor learned. Under ``min_usd_per_minute`` a window is learned but
    never flagged. This is the
    kill-switch rule: the engine also issues a control when it fires.

    Parameters
    ----------
    warmup
        Windows learned before scoring.
    alpha
        Weight of a new window in the baselines.
    factor
        Multiple of the baseline cost rate that flags.
    min_usd_per_minute
        Spend per minute below which nothing is flagged.
    min_requests
        Calls in the window below which nothing is judged.
    z
        Poisson significance for the call-count factor.

    Examples
    --------
    >>> det = CostRate()
    >>> for _ in range(40):
    ...     det.learn_one({"requests": 50, "median_call_nanos": 4_000_000, "seconds": 300})
    >>> normal = det.score_one({"requests": 60, "median_call_nanos": 4_500_000, "seconds": 300})
    >>> switched = det.score_one({"requests": 50, "median_call_nanos": 60_000_000, "seconds": 300})
    >>> looping = det.score_one({"requests": 400, "median_call_nanos": 5_000_000, "seconds": 300})
    >>> normal < 1.0 <= min(switched, looping)
    True

    """

    def __init__(self, warmup: int = 30, alpha: float = 0.02, factor: float = 4.0,
                 min_usd_per_minute: float = 0.005, min_requests: int = 3, z: float = 4.0) -> None:
        self.warmup = warmup
        self.alpha = alpha
        self.factor = factor
        self.min_usd_per_minute = min_usd_per_minute
        self.min_requests = min_requests
        self.z = z
        self._per_call = EWBaseline(alpha)
        self._calls = EWBaseline(alpha)

    @staticmethod
    def _median(x: dict) -> float:
        median = x.get("median_call_nanos")
        if median is None:
            median = x.get("cost_nanos", 0) / max(x.get("requests", 1), 1)
        return float(median)

    def enough(self, x: dict) -> bool:
        return x.get("requests", 0) >= self.min_requests

    def learn_one(self, x: dict) -> None:
        if x.get("requests", 0) >= self.min_requests:
            self._per_call.update(self._median(x))
        self._calls.update(x.get("requests", 0))

    def score_one(self, x: dict) -> float:
        per_minute = self._median(x) * x.get("requests", 0) * 60 / max(x.get("seconds", 60), 1)
        if self._per_call.n < self.warmup or not self.enough(x) or per_minute < self.min_usd_per_minute * 1e9:
            return 0.0
        per_call = self._median(x) / max(self._per_call.mean, 1.0)
        lam, n = max(self._calls.mean, 0.5), x.get("requests", 0)
        count = n / lam if n - lam >= self.z * math.sqrt(lam) + 2 else 1.0
        return per_call * max(count, 1.0) / self.factor

    @property
    def baseline_usd_per_minute(self) -> float:
        return self._per_call.mean * self._calls.mean / 5 / 1e9
