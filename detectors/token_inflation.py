"""Token inflation: input tokens per request for a feature drift up."""

from __future__ import annotations

from river import base, drift

from detectors.baseline import EWBaseline


class TokenInflation(base.AnomalyDetector):
    """Scores one hour of one tenant x feature by its mean input tokens per request
    against a slow baseline, with River's Page-Hinkley test for upward drift.

    ``x`` holds ``requests`` and ``input_tokens`` for the bucket and, when known,
    ``median_input_tokens`` (preferred: one huge call is not inflation). The score is
    ``ratio / factor`` where ``ratio`` = mean / baseline; it flags (1.0 or more) when the
    ratio is ``factor`` (+25%) or more *and* Page-Hinkley detected an upward drift within
    the last ``drift_memory`` buckets, or
    at once when the ratio reaches ``jump_factor`` (a prompt version that doubles the
    context). Guards: fewer than ``min_requests`` per bucket score 0; no score before
    ``warmup`` buckets.

    Parameters
    ----------
    warmup
        Buckets learned before scoring.
    alpha
        Weight of a new bucket in the baseline (0.02 ~ the last two days of hours).
    factor
        Ratio to the baseline that flags once drift is confirmed.
    jump_factor
        Ratio to the baseline that flags at once.
    min_requests
        Minimum calls per bucket.
    suspect_factor
        Buckets at this ratio or above feed the drift test but not the baseline.
    drift_memory
        Buckets for which a detected drift counts.

    Examples
    --------
    >>> det = TokenInflation()
    >>> for _ in range(50):
    ...     det.learn_one({"requests": 100, "input_tokens": 100_000})
    >>> normal = det.score_one({"requests": 100, "input_tokens": 105_000})
    >>> bloated = det.score_one({"requests": 100, "input_tokens": 210_000})
    >>> normal < 1.0 <= bloated
    True

    """

    def __init__(self, warmup: int = 24, alpha: float = 0.02, factor: float = 1.25, jump_factor: float = 1.6,
                 min_requests: int = 30, suspect_factor: float = 1.15, drift_memory: int = 3) -> None:
        self.warmup = warmup
        self.suspect_factor = suspect_factor
        self.drift_memory = drift_memory
        self.alpha = alpha
        self.factor = factor
        self.jump_factor = jump_factor
        self.min_requests = min_requests
        self._baseline = EWBaseline(alpha)
        self._drift = drift.PageHinkley(min_instances=6, delta=0.05, threshold=1.0, mode="up")
        self._since_drift = 10**9

    @staticmethod
    def _mean(x: dict) -> float:
        if x.get("median_input_tokens") is not None:
            return float(x["median_input_tokens"])
        return x.get("input_tokens", 0) / x["requests"] if x.get("requests") else 0.0

    def enough(self, x: dict) -> bool:
        """Enough calls in the bucket to judge it (otherwise it is neither scored nor learned)."""
        return x.get("requests", 0) >= self.min_requests

    def learn_one(self, x: dict) -> None:
        if x.get("requests", 0) < self.min_requests:
            return
        mean = self._mean(x)
        if self._baseline.n >= self.warmup:
            ratio = mean / max(self._baseline.mean, 1.0)
            self._drift.update(ratio)
            self._since_drift = 0 if self._drift.drift_detected else self._since_drift + 1
            if ratio >= self.suspect_factor:
                return  # a creeping rise must not become the new baseline
        self._baseline.update(mean)

    def score_one(self, x: dict) -> float:
        if x.get("requests", 0) < self.min_requests or self._baseline.n < self.warmup:
            return 0.0
        ratio = self._mean(x) / max(self._baseline.mean, 1.0)
        if ratio >= self.jump_factor:
            return ratio / self.jump_factor
        drifting = self._since_drift < self.drift_memory
        return ratio / self.factor if drifting else min(ratio / self.jump_factor, 0.99)
