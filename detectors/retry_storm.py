"""Retry storms: retries and errors per call far above a scope's own baseline."""

from __future__ import annotations

from river import base

from detectors.baseline import EWBaseline


class RetryStorm(base.AnomalyDetector):
    """Scores one minute of one tenant x feature x model by its retry-and-error ratio.

    ``x`` holds the minute's ``requests``, ``retries`` (attempt > 0) and ``errors``
    (status not ok). The score is the ratio's distance from its baseline in standard
    deviations, divided by ``z_threshold``: 1.0 or more flags a storm. Guards: fewer than
    ``min_requests`` calls, fewer than ``min_failures`` retries and errors, or a ratio
    under ``min_ratio``, score 0 (organic 1-2% failures never reach them). Cold start
    (fewer than ``warmup`` minutes learned): only a ratio of ``cold_ratio`` or more flags.

    Parameters
    ----------
    warmup
        Minutes learned before the baseline is trusted.
    alpha
        Weight of a new minute in the baseline.
    z_threshold
        Standard deviations above the baseline that flag.
    min_requests
        Minimum calls in the minute.
    min_ratio
        Minimum (retries + errors) / requests to flag at all.
    min_failures
        Minimum retries + errors in the minute.
    cold_ratio
        Ratio that flags during cold start.

    Examples
    --------
    >>> det = RetryStorm()
    >>> for _ in range(30):
    ...     det.learn_one({"requests": 100, "retries": 2, "errors": 2})
    >>> normal = det.score_one({"requests": 100, "retries": 3, "errors": 3})
    >>> storm = det.score_one({"requests": 400, "retries": 250, "errors": 200})
    >>> normal < 1.0 <= storm
    True

    """

    def __init__(self, warmup: int = 10, alpha: float = 0.05, z_threshold: float = 6.0, min_requests: int = 5,
                 min_ratio: float = 0.4, cold_ratio: float = 0.6, min_failures: int = 5) -> None:
        self.min_failures = min_failures
        self.warmup = warmup
        self.alpha = alpha
        self.z_threshold = z_threshold
        self.min_requests = min_requests
        self.min_ratio = min_ratio
        self.cold_ratio = cold_ratio
        self._baseline = EWBaseline(alpha)

    @staticmethod
    def _ratio(x: dict) -> float:
        requests = x.get("requests", 0)
        return (x.get("retries", 0) + x.get("errors", 0)) / requests if requests else 0.0

    def enough(self, x: dict) -> bool:
        """Enough calls in the minute to judge it (otherwise it is neither scored nor learned)."""
        return x.get("requests", 0) >= self.min_requests

    def learn_one(self, x: dict) -> None:
        if x.get("requests", 0) > 0:
            self._baseline.update(self._ratio(x))

    def score_one(self, x: dict) -> float:
        ratio = self._ratio(x)
        failures = x.get("retries", 0) + x.get("errors", 0)
        if x.get("requests", 0) < self.min_requests or ratio < self.min_ratio or failures < self.min_failures:
            return 0.0
        if self._baseline.n < self.warmup:
            return ratio / self.cold_ratio
        spread = max(self._baseline.std, 0.05)
        return max(0.0, (ratio - self._baseline.mean) / spread / self.z_threshold)
