"""Heavy users: a small share of a tenant's users generating a large share of its spend."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from decimal import Decimal

from river import base

from tokenbrake.detectors.baseline import EWBaseline
from tokenbrake.detectors.buckets import Closed, Judged


class HeavyUser(base.AnomalyDetector):
    """Scores one tenant's spend concentration (evaluated hourly over the UTC day so far).

    ``x`` maps ``"user:<id>"`` to that user's spend (nano-USD) today. The feature is the
    share of spend by the top ``top_fraction`` of users (at least one). It flags (score
    1.0 or more) when that share reaches ``min_share`` (e.g. 5% of users making 40% of the
    bill) *and* exceeds the tenant's own usual share by ``margin``: Pareto-shaped organic
    usage, where a few users always dominate, is the baseline, not an incident. Guards:
    fewer than ``min_users`` users or under ``min_usd`` spend score 0.

    Parameters
    ----------
    top_fraction
        The share of users considered "heavy".
    min_share
        Their share of spend that may flag.
    margin
        How far above the tenant's usual share it must be.
    min_users
        Minimum distinct users.
    min_usd
        Minimum spend today.
    warmup
        Evaluations learned before the baseline is used; before that only a share of
        ``cold_share`` or more flags (a new tenant may well be one busy service account).
    cold_share
        The bar during warm-up.

    Examples
    --------
    >>> det = HeavyUser()
    >>> even = {f"user:u{i}": 1_000_000_000 for i in range(100)}
    >>> for _ in range(10):
    ...     det.learn_one(even)
    >>> abusive = {**even, "user:u0": 200_000_000_000}
    >>> det.score_one(even) < 1.0 <= det.score_one(abusive)
    True
    >>> det.heaviest(abusive, 1)
    ['u0']

    """

    def __init__(self, top_fraction: float = 0.05, min_share: float = 0.4, margin: float = 0.25,
                 min_users: int = 20, min_usd: float = 5.0, warmup: int = 6, cold_share: float = 0.9) -> None:
        self.cold_share = cold_share
        self.top_fraction = top_fraction
        self.min_share = min_share
        self.margin = margin
        self.min_users = min_users
        self.min_usd = min_usd
        self.warmup = warmup
        self._baseline = EWBaseline(0.1)

    def _share(self, x: dict) -> tuple[float, int, int]:
        spends = [v for k, v in x.items() if k.startswith("user:")]
        total = sum(spends)
        top = max(1, int(len(spends) * self.top_fraction))
        top = sum(heapq.nlargest(top, spends))
        return (top / total if total else 0.0), len(spends), total

    def describe(self, x: dict, observed: Decimal) -> str:
        """The figures an alert's summary adds: the heaviest users of the bucket."""
        return f"heaviest users {', '.join(self.heaviest(x, 3))}"

    def heaviest(self, x: dict, n: int) -> list[str]:
        users = heapq.nlargest(n, ((v, k) for k, v in x.items() if k.startswith("user:")))
        return [k.removeprefix("user:") for _, k in users]

    def learn_one(self, x: dict) -> None:
        share, users, _ = self._share(x)
        if users >= self.min_users:
            self._baseline.update(share)

    def score_one(self, x: dict) -> float:
        share, users, total = self._share(x)
        if users < self.min_users or total < self.min_usd * 1e9:
            return 0.0
        if self._baseline.n < self.warmup:
            return share / self.cold_share
        bar = max(self.min_share, self._baseline.mean + self.margin)
        return share / bar


def features_of(closed: Closed, memory: dict) -> Iterator[Judged]:
    """Each tenant seen in a closed ``TENANTS_HOUR``: today's spend per user so far."""
    users = closed.beside
    for (tenant,) in closed.counters:
        yield (tenant,), {f"user:{u}": s for u, s in users.get(tenant, {}).items()}, Decimal(0)
