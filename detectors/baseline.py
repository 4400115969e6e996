"""A small exponentially weighted baseline (mean and variance), seeded by its first value.

River's ``stats.EWMean`` starts from zero, which biases a cold baseline low; detectors
need the first observations to count fully.
"""

from __future__ import annotations

import math


class EWBaseline:
    __slots__ = ("alpha", "n", "mean", "var")

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.n = 0
        self.mean = 0.0
        self.var = 0.0

    def update(self, x: float) -> None:
        self.n += 1
        if self.n == 1:
            self.mean = x
            return
        # warm start: behave like a running average until 1/alpha points are seen
        a = max(self.alpha, 1.0 / self.n)
        diff = x - self.mean
        self.mean += a * diff
        self.var = (1 - a) * (self.var + a * diff * diff)

    @property
    def std(self) -> float:
        return math.sqrt(self.var)
