"""Runaway cost per second: a scope's spend rate jumps far above its recent baseline."""

from __future__ import annotations

from river import base

from detectors.baseline import EWBaseline


class CostRate(base.AnomalyDetector):
    """Scores one minute of one tenant x feature by its cost per second.

    ``x`` holds ``cost_nanos`` (spend in the minute, nano-USD) and ``seconds`` (the
    bucket length, 60). The score is the rate over the baseline rate divided by
    ``factor`` (4.0 = 300% above): 1.0 or more flags. Guards: a rate under
    ``min_usd_per_minute`` scores 0; no score before ``warmup`` minutes are learned.
    This is the kill-switch rule: the engine also issues a control when it fires.

    Parameters
    ----------
    warmup
        Minutes learned before scoring.
    alpha
        Weight of a new minute in the baseline (0.05 ~ the last 20 minutes).
    factor
        Multiple of the baseline rate that flags.
    min_usd_per_minute
        Spend per minute below which nothing is flagged.

    Examples
    --------
    >>> det = CostRate()
    >>> for _ in range(30):
    ...     det.learn_one({"cost_nanos": 2_000_000_000, "seconds": 60})
    >>> normal = det.score_one({"cost_nanos": 2_600_000_000, "seconds": 60})
    >>> runaway = det.score_one({"cost_nanos": 20_000_000_000, "seconds": 60})
    >>> normal < 1.0 <= runaway
    True

    """

    def __init__(self, warmup: int = 15, alpha: float = 0.05, factor: float = 4.0,
                 min_usd_per_minute: float = 0.05) -> None:
        self.warmup = warmup
        self.alpha = alpha
        self.factor = factor
        self.min_usd_per_minute = min_usd_per_minute
        self._baseline = EWBaseline(alpha)

    @staticmethod
    def _rate(x: dict) -> float:
        return x.get("cost_nanos", 0) / max(x.get("seconds", 60), 1)

    def learn_one(self, x: dict) -> None:
        self._baseline.update(self._rate(x))

    def score_one(self, x: dict) -> float:
        rate = self._rate(x)
        if self._baseline.n < self.warmup or rate * 60 < self.min_usd_per_minute * 1e9:
            return 0.0
        return rate / max(self._baseline.mean, 1.0) / self.factor

    @property
    def baseline_usd_per_minute(self) -> float:
        return self._baseline.mean * 60 / 1e9
