"""Spend spikes against a seasonal baseline: an hour against the same hour on previous
days and weeks, and a day against twice its trailing 7-day average."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from river import base

from tokenbrake.detectors.buckets import Closed, Judged, nanos_to_usd


class SpendSpike(base.AnomalyDetector):
    """Scores one closed hour of spend for one scope.

    ``x`` holds ``spend`` (the hour's spend, nano-USD), ``hour`` (hours since the epoch)
    and ``day_to_date`` (the UTC day's spend so far including this hour). Two forms:

    - intra-day: the hour against the mean of the same hour of day over the last 7 days,
      blended with the same hour of the week when a week is known, so a normal Monday
      morning does not page; flags at ``hour_factor`` times that baseline;
    - daily: day-to-date spend over ``day_factor`` (2.0) times the trailing 7-day average
      of whole days, once 7 days are known.

    The score is the larger ratio over its factor: 1.0 or more flags. Guards: a baseline
    hour under ``min_usd_per_hour`` and fewer than ``warmup_days`` of history score 0.

    Parameters
    ----------
    hour_factor
        Multiple of the seasonal hourly baseline that flags.
    day_factor
        Multiple of the trailing 7-day daily average that flags.
    warmup_days
        Days of same-hour history needed before the hourly form scores.
    min_usd_per_hour
        Hours whose baseline and spend are both below this are not scored.

    Examples
    --------
    >>> det = SpendSpike()
    >>> day_total = 0
    >>> for hour in range(24 * 8):
    ...     det.learn_one({"spend": 1_000_000_000, "hour": hour, "day_to_date": (hour % 24 + 1) * 10**9})
    >>> normal = det.score_one({"spend": 1_200_000_000, "hour": 24 * 8, "day_to_date": 1_200_000_000})
    >>> spike = det.score_one({"spend": 9_000_000_000, "hour": 24 * 8, "day_to_date": 9_000_000_000})
    >>> normal < 1.0 <= spike
    True

    """

    def __init__(self, hour_factor: float = 3.0, day_factor: float = 2.0, warmup_days: int = 3,
                 min_usd_per_hour: float = 0.5) -> None:
        self.hour_factor = hour_factor
        self.day_factor = day_factor
        self.warmup_days = warmup_days
        self.min_usd_per_hour = min_usd_per_hour
        self._by_hour_of_day: dict[int, deque[int]] = {}
        self._by_hour_of_week: dict[int, int] = {}
        self._days: deque[int] = deque(maxlen=7)
        self._day: int | None = None
        self._day_total = 0

    def learn_one(self, x: dict) -> None:
        hour, spend = x["hour"], x.get("spend", 0)
        self._by_hour_of_day.setdefault(hour % 24, deque(maxlen=7)).append(spend)
        self._by_hour_of_week[hour % 168] = spend
        day = hour // 24
        if self._day is not None and day != self._day:
            self._days.append(self._day_total)
            self._day_total = 0
        self._day = day
        self._day_total = x.get("day_to_date", self._day_total + spend)

    def hour_baseline(self, hour: int) -> float | None:
        same_hour = self._by_hour_of_day.get(hour % 24)
        if not same_hour or len(same_hour) < self.warmup_days:
            return None
        baseline = sum(same_hour) / len(same_hour)
        week = self._by_hour_of_week.get(hour % 168)
        if week is not None and len(same_hour) >= 7:
            baseline = (baseline + week) / 2
        return baseline

    def score_one(self, x: dict) -> float:
        hour, spend = x["hour"], x.get("spend", 0)
        floor = self.min_usd_per_hour * 1e9
        score = 0.0
        baseline = self.hour_baseline(hour)
        if baseline is not None and max(baseline, spend) >= floor:
            score = spend / max(baseline, floor) / self.hour_factor
        if len(self._days) == 7:
            average = sum(self._days) / 7
            if average >= floor * 24:
                score = max(score, x.get("day_to_date", 0) / average / self.day_factor)
        return score


def features_of(closed: Closed, memory: dict) -> Iterator[Judged]:
    """Each scope of a closed ``SPEND_HOUR``: the hour's spend, its index, and the day's spend so
    far (``memory``: scope -> [UTC day, spend that day up to this hour])."""
    day = closed.start // 86_400_000
    for scope, (spend,) in closed.counters.items():
        running = memory.get(scope)
        if running is None or running[0] != day:
            running = memory[scope] = [day, 0]
        running[1] += spend
        yield (scope, {"spend": spend, "hour": closed.start // 3_600_000, "day_to_date": running[1]},
               nanos_to_usd(spend))
