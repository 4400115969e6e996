"""Retry storms: failed and retried attempts far above a scope's own failure rate."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

from river import base

from tokenbrake.detectors.buckets import Closed, Judged
from tokenbrake.detectors.tails import CountRate, poisson_upper_nats


class RetryStorm(base.AnomalyDetector):
    """Scores one minute (or the open part of one) of one tenant x feature x model.

    ``x`` holds the minute's ``requests`` (attempts), ``retries`` (attempt > 0) and
    ``errors`` (status not ok). Failures = retries + errors. Two conditions, both needed:

    - **significance**: the failures are too many for a Poisson count at the scope's
      learned failure rate, ``-ln p >= threshold_nats`` (Chernoff bound). Failures come in
      pairs (a failed attempt, then its retry), so the count is divided by ``dispersion``.
      Evidence grows with volume: at 200 calls a minute a storm is certain within seconds;
      at 2 calls a minute it takes many failures, so the organic 1-2% never pages.
    - **effect**: the failure ratio is at least ``factor`` times the learned rate *and*
      ``min_excess`` above it, in absolute terms (a 3% scope going to 4.5% is not a storm,
      however significant at 2,000 calls a minute).

    The score is the smaller of the two, each over its bar: 1.0 or more flags. The rate is
    count-weighted (busy minutes weigh more) and forgets ``alpha`` per learned minute;
    until ``warmup_calls`` calls are learned it is taken as at least ``cold_rate``.
    Fewer than ``min_failures`` failures never flag.

    Parameters
    ----------
    alpha
        Weight lost per learned minute by the failure rate (0.002 ~ the last 8 hours).
    threshold_nats
        ``-ln`` of the p-value bound that flags (16 ~ 1e-7: about 100,000 scope-minutes a
        day are tested, many of them several times while the minute is open).
    factor
        Failure ratio over the learned rate that may flag.
    min_excess
        Failure ratio above the learned rate that may flag (absolute).
    min_failures
        Minimum retries + errors.
    dispersion
        Failures per independent incident (an error and its retry).
    min_rate
        Floor of the learned rate.
    cold_rate
        Floor of the rate while fewer than ``warmup_calls`` calls are learned.
    warmup_calls
        Calls learned before the scope's own rate is trusted.

    Examples
    --------
    >>> det = RetryStorm()
    >>> for _ in range(30):
    ...     det.learn_one({"requests": 100, "retries": 2, "errors": 2})
    >>> normal = det.score_one({"requests": 100, "retries": 3, "errors": 3})
    >>> storm = det.score_one({"requests": 400, "retries": 250, "errors": 200})
    >>> normal < 1.0 <= storm
    True
    >>> det.score_one({"requests": 2000, "retries": 60, "errors": 60}) < 1.0  # significant, too small
    True

    """

    def __init__(self, alpha: float = 0.002, threshold_nats: float = 16.0, factor: float = 3.0,
                 min_excess: float = 0.1, min_failures: int = 5, dispersion: float = 2.0, min_rate: float = 0.01,
                 cold_rate: float = 0.1, warmup_calls: int = 300) -> None:
        self.alpha = alpha
        self.threshold_nats = threshold_nats
        self.factor = factor
        self.min_excess = min_excess
        self.min_failures = min_failures
        self.dispersion = dispersion
        self.min_rate = min_rate
        self.cold_rate = cold_rate
        self.warmup_calls = warmup_calls
        self._rate = CountRate(alpha)

    @staticmethod
    def _failures(x: dict) -> int:
        return x.get("retries", 0) + x.get("errors", 0)

    def enough(self, x: dict) -> bool:
        """A minute with calls can be judged (quiet ones are judged by the significance test)."""
        return x.get("requests", 0) > 0

    def rate(self) -> float:
        floor = self.min_rate if self._rate.units >= self.warmup_calls else self.cold_rate
        return max(self._rate.rate, floor)

    def learn_one(self, x: dict) -> None:
        if x.get("requests", 0) > 0:
            self._rate.update(self._failures(x), x["requests"])

    def score_one(self, x: dict) -> float:
        n, k = x.get("requests", 0), self._failures(x)
        if n <= 0 or k < self.min_failures:
            return 0.0
        rate = self.rate()
        evidence = poisson_upper_nats(k, n * rate, self.dispersion) / self.threshold_nats
        effect = (k / n) / max(rate * self.factor, rate + self.min_excess)
        return min(evidence, effect)


def features_of(closed: Closed, memory: dict) -> Iterator[Judged]:
    """Each tenant x feature x model of a closed ``CALLS_MINUTE``: its failures per call."""
    for scope, (requests, retries, errors, _) in closed.counters.items():
        yield (scope, {"requests": requests, "retries": retries, "errors": errors},
               Decimal(retries + errors) / max(requests, 1))


def early(det: RetryStorm, counters: list[int]) -> tuple[dict, Decimal] | None:
    """The still-open minute of one scope, scored when a failure lands in it (so a storm pages
    within seconds of crossing the guards, not at the minute's end), once it holds
    ``min_failures``. Never learned."""
    requests, retries, errors = counters[0], counters[1], counters[2]
    if retries + errors < det.min_failures:
        return None
    return {"requests": requests, "retries": retries, "errors": errors}, Decimal(retries + errors) / max(requests, 1)
