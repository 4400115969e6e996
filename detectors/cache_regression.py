"""Cache-hit collapse: a feature's share of cached input tokens falls, and its cost rises."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from decimal import Decimal

from river import base

from tokenbrake.detectors.buckets import Closed, Judged
from tokenbrake.detectors.tails import CountRate, binomial_lower_nats


class CacheRegression(base.AnomalyDetector):
    """Scores 10 minutes of one tenant x feature by how many calls read the prompt cache.

    ``x`` holds ``requests``, ``cached_calls`` (calls with cached input tokens),
    ``input_tokens`` and ``cached_input_tokens``. A collapse (a prompt edit that breaks the
    cached prefix, a provider or gateway dropping the cache) is a named cost lever in the
    seeds: cached input is billed at 10-50% of the price, so losing it raises the
    feature's input bill by up to 2x at unchanged traffic, too little for ``cost_rate``
    and too slow for ``spend_spike`` to see soon. Two conditions, both needed:

    - **significance**: too few calls hit the cache for a binomial count at the scope's
      learned hit rate, ``-ln p >= threshold_nats`` (divided by ``dispersion``: calls of
      one conversation hit or miss together);
    - **effect**: the share of cached input tokens fell by ``min_drop`` of its learned
      level *and* by ``min_points`` in absolute terms.

    The bucket is judged alone (a busy scope pages in its first 10 minutes) and together
    with the ``window - 1`` buckets learned before it (a quiet scope gathers evidence over
    an hour: a collapse not yet significant is learned, and counts again in the window).
    Scopes whose learned hit rate is under ``min_hit_rate`` (features that do not use
    the cache) score 0, as does everything before ``warmup_calls`` learned calls.

    Parameters
    ----------
    alpha
        Weight lost per learned bucket by the learned rates (0.01 ~ the last 16 hours).
    threshold_nats
        ``-ln`` of the p-value bound that flags (13.8 ~ 1e-6).
    min_drop
        Relative fall of the cached share that may flag.
    min_points
        Absolute fall of the cached share that may flag.
    min_hit_rate
        Learned share of calls hitting the cache below which a scope is not judged.
    dispersion
        Calls per independent hit or miss.
    warmup_calls
        Calls learned before scoring.
    window
        Buckets judged together for quiet scopes.

    Examples
    --------
    >>> det = CacheRegression()
    >>> for _ in range(50):
    ...     det.learn_one({"requests": 400, "cached_calls": 240, "input_tokens": 400_000,
    ...                    "cached_input_tokens": 120_000})
    >>> normal = det.score_one({"requests": 400, "cached_calls": 230, "input_tokens": 400_000,
    ...                         "cached_input_tokens": 110_000})
    >>> collapsed = det.score_one({"requests": 400, "cached_calls": 8, "input_tokens": 400_000,
    ...                            "cached_input_tokens": 2_000})
    >>> normal < 1.0 <= collapsed
    True

    """

    def __init__(self, alpha: float = 0.01, threshold_nats: float = 13.8, min_drop: float = 0.5,
                 min_points: float = 0.1, min_hit_rate: float = 0.05, dispersion: float = 2.0,
                 warmup_calls: int = 1000, window: int = 6) -> None:
        self.alpha = alpha
        self.threshold_nats = threshold_nats
        self.min_drop = min_drop
        self.min_points = min_points
        self.min_hit_rate = min_hit_rate
        self.dispersion = dispersion
        self.warmup_calls = warmup_calls
        self.window = window
        self._recent: deque[tuple[int, int, int, int]] = deque(maxlen=max(window - 1, 0))
        self._hits = CountRate(alpha)
        self._share = CountRate(alpha)

    def enough(self, x: dict) -> bool:
        return x.get("requests", 0) > 0 and x.get("input_tokens", 0) > 0

    def learn_one(self, x: dict) -> None:
        if self.enough(x):
            self._hits.update(x.get("cached_calls", 0), x["requests"])
            self._share.update(x.get("cached_input_tokens", 0), x["input_tokens"])
            if self._recent.maxlen:
                self._recent.append(self._counts(x))

    @staticmethod
    def _counts(x: dict) -> tuple[int, int, int, int]:
        return x["requests"], x.get("cached_calls", 0), x["input_tokens"], x.get("cached_input_tokens", 0)

    def describe(self, x: dict, observed: Decimal) -> str:
        """The figures an alert's summary adds: the bucket's cached share of input against the baseline's."""
        return f"cached share of input {float(observed):.0%} against {self.baseline_share:.0%}"

    @property
    def baseline_share(self) -> float:
        return self._share.rate

    def score_one(self, x: dict) -> float:
        if not self.enough(x) or self._hits.units < self.warmup_calls or self._hits.rate < self.min_hit_rate:
            return 0.0
        counts = self._counts(x)
        score = self._score(*counts)
        if self._recent:
            score = max(score, self._score(*(sum(c) for c in zip(counts, *self._recent, strict=True))))
        return score

    def _score(self, requests: int, cached_calls: int, input_tokens: int, cached_tokens: int) -> float:
        evidence = binomial_lower_nats(cached_calls, requests, self._hits.rate, self.dispersion)
        fall = self._share.rate - cached_tokens / input_tokens
        effect = fall / max(self._share.rate * self.min_drop, self.min_points)
        return max(0.0, min(evidence / self.threshold_nats, effect))


def features_of(closed: Closed, memory: dict) -> Iterator[Judged]:
    """Each tenant x feature of a closed ``CACHE_10_MINUTES``: its share of cached input tokens."""
    for scope, (requests, hits, tokens, cached) in closed.counters.items():
        yield (scope, {"requests": requests, "cached_calls": hits, "input_tokens": tokens,
                       "cached_input_tokens": cached}, Decimal(cached) / max(tokens, 1))
