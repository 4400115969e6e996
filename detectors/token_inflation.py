"""Token inflation: input tokens per call for a feature rise, at once or slowly."""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterator
from decimal import Decimal

from river import base

from tokenbrake.detectors.buckets import Closed, Judged


class TokenInflation(base.AnomalyDetector):
    """Scores one closed hour of one tenant x feature by its median input tokens per call.

    ``x`` holds ``requests`` and ``median_input_tokens`` for the hour (or ``input_tokens``,
    the total, from which a mean is taken). Two forms, the higher score counts:

    - **step**: the hour's median against the reference, flagging at ``jump_factor``
      (+60%: a prompt version that doubles the context pages within its first hour);
    - **drift**: the level of the last 24 judged hours (the median of their medians, so a
      rise must hold for half a day to count) against the reference, flagging at
      ``factor`` (+25%).

    The **reference** is the median of the last ``reference_days`` daily levels (a daily
    level = the median of 24 judged hours). Why this one: a week holds every weekday
    and weekend once, so a weekly mix is not drift; the median of seven days ignores up to
    three days of anything, so a drift of 8% a day is still measured against where it
    started when it crosses +25% on its third day (the slow exponential baseline it
    replaces followed such a drift and never reached +25%); and a rise that is sustained
    for a week becomes the new normal, as it should (the seeds' week-over-week rule).
    Until ``min_days`` daily levels are known the step form uses the median of the last
    24 hours and the drift form is off. Hours with fewer than ``min_requests`` calls are
    neither scored nor learned.

    Parameters
    ----------
    warmup
        Judged hours learned before anything is scored.
    factor
        Sustained ratio to the reference that flags.
    jump_factor
        One hour's ratio to the reference that flags.
    min_requests
        Minimum calls in the hour.
    reference_days
        Daily levels the reference is the median of.
    min_days
        Daily levels needed before the drift form scores.

    Examples
    --------
    >>> det = TokenInflation()
    >>> for hour in range(24 * 7):
    ...     det.learn_one({"requests": 100, "median_input_tokens": 1000})
    >>> normal = det.score_one({"requests": 100, "median_input_tokens": 1050})
    >>> bloated = det.score_one({"requests": 100, "median_input_tokens": 2100})
    >>> normal < 1.0 <= bloated
    True
    >>> for hour in range(24 * 3):  # creeping up by 0.5% an hour for three days
    ...     det.learn_one({"requests": 100, "median_input_tokens": 1000 * 1.005 ** hour})
    >>> 1000 * 1.005 ** 72 < 1000 * det.jump_factor  # never a step
    True
    >>> det.score_one({"requests": 100, "median_input_tokens": 1000 * 1.005 ** 72}) >= 1.0
    True

    """

    def __init__(self, warmup: int = 24, factor: float = 1.25, jump_factor: float = 1.6, min_requests: int = 30,
                 reference_days: int = 7, min_days: int = 3) -> None:
        self.warmup = warmup
        self.factor = factor
        self.jump_factor = jump_factor
        self.min_requests = min_requests
        self.reference_days = reference_days
        self.min_days = min_days
        self._hours: deque[float] = deque(maxlen=24)
        self._days: deque[float] = deque(maxlen=reference_days)
        self._learned = 0

    @staticmethod
    def _median(x: dict) -> float:
        if x.get("median_input_tokens") is not None:
            return float(x["median_input_tokens"])
        return x.get("input_tokens", 0) / x["requests"] if x.get("requests") else 0.0

    def enough(self, x: dict) -> bool:
        """Enough calls in the hour to judge it (otherwise it is neither scored nor learned)."""
        return x.get("requests", 0) >= self.min_requests

    def reference(self) -> float | None:
        if len(self._days) < self.min_days:
            return None
        return float(statistics.median(self._days))

    def learn_one(self, x: dict) -> None:
        if not self.enough(x):
            return
        self._hours.append(self._median(x))
        self._learned += 1
        if self._learned % 24 == 0:
            self._days.append(float(statistics.median(self._hours)))

    def score_one(self, x: dict) -> float:
        if not self.enough(x) or self._learned < self.warmup:
            return 0.0
        median, reference = self._median(x), self.reference()
        step_base = reference if reference is not None else statistics.median(self._hours)
        score = median / max(step_base, 1.0) / self.jump_factor
        if reference is not None:
            level = statistics.median([*list(self._hours)[1:], median])
            score = max(score, level / max(reference, 1.0) / self.factor)
        return score


def features_of(closed: Closed, memory: dict) -> Iterator[Judged]:
    """Each tenant x feature of a closed ``TOKENS_HOUR``: its median input tokens per call."""
    for scope, (requests, tokens, sample) in closed.counters.items():
        median = statistics.median(sample)
        yield (scope, {"requests": requests, "input_tokens": tokens, "median_input_tokens": median},
               Decimal(str(median)))
