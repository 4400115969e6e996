"""Tail tests on counts, in nats (``-ln`` of an upper bound on the p-value).

The detectors judge *counts* (calls, failures, cache hits) against a rate they learned,
so a threshold means the same thing at 15 calls a minute and at 2,000: the evidence grows
with volume instead of a ratio's noise shrinking with it. Chernoff bounds are used instead
of exact tails: closed form, no dependency, no overflow at large counts, and conservative
(the true p-value is smaller), which errs towards silence.

- Poisson, upper tail: ``P(X >= k) <= exp(-(k ln(k/lam) - k + lam))`` for ``k > lam``.
- Binomial, lower tail: ``P(X <= k) <= exp(-n KL(k/n || p))`` for ``k < n p``.
- Binomial, upper tail: the same bound for ``k > n p``.

Counts that come in clumps (a failed call is an error *and* a retry) are divided by
``dispersion`` first: the evidence of ``k`` events in clumps of two is that of ``k/2``.

>>> round(poisson_upper_nats(20, 2.0), 1)
28.1
>>> poisson_upper_nats(2, 5.0)
0.0
>>> binomial_lower_nats(5, 100, 0.6) > binomial_lower_nats(50, 100, 0.6)
True
"""

from __future__ import annotations

import math


def poisson_upper_nats(k: float, lam: float, dispersion: float = 1.0) -> float:
    """Evidence that ``k`` or more events were not drawn from Poisson(``lam``)."""
    k, lam = k / dispersion, max(lam, 1e-9) / dispersion
    if k <= lam:
        return 0.0
    return k * math.log(k / lam) - k + lam


def _kl(q: float, p: float) -> float:
    total = 0.0
    if q > 0:
        total += q * math.log(q / p)
    if q < 1:
        total += (1 - q) * math.log((1 - q) / (1 - p))
    return total


def binomial_lower_nats(k: float, n: float, p: float, dispersion: float = 1.0) -> float:
    """Evidence that ``k`` or fewer successes in ``n`` trials were not drawn at rate ``p``."""
    if n <= 0 or k >= n * p:
        return 0.0
    p = min(max(p, 1e-9), 1 - 1e-9)
    return n * _kl(k / n, p) / dispersion


def binomial_upper_nats(k: float, n: float, p: float, dispersion: float = 1.0) -> float:
    """Evidence that ``k`` or more successes in ``n`` trials were not drawn at rate ``p``."""
    if n <= 0 or k <= n * p:
        return 0.0
    p = min(max(p, 1e-9), 1 - 1e-9)
    return n * _kl(min(k / n, 1.0), p) / dispersion


class CountRate:
    """A count-weighted, exponentially forgetting rate: events per unit (failures per call,
    cache hits per call). Each learned bucket weighs by its size, so a busy minute says more
    than a quiet one; ``alpha`` is the weight lost per learned bucket.

    >>> r = CountRate(0.1)
    >>> r.update(3, 100); r.update(5, 100)
    >>> round(r.rate, 3), r.units > 150
    (0.041, True)
    """

    __slots__ = ("alpha", "events", "units", "buckets")

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.events = 0.0
        self.units = 0.0
        self.buckets = 0

    def update(self, events: float, units: float) -> None:
        keep = 1 - self.alpha
        self.events = self.events * keep + events
        self.units = self.units * keep + units
        self.buckets += 1

    @property
    def rate(self) -> float:
        return self.events / self.units if self.units else 0.0
