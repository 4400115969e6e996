"""One call costing more than a cap."""

from __future__ import annotations

from river import base


class RequestCostCap(base.AnomalyDetector):
    """Scores one call by its cost over the cap: 1.0 or more means over the cap.

    Stateless by design (``learn_one`` does nothing): a cap is a policy, not a baseline.
    The engine evaluates it on every call, from the policies file's ``request_cost_caps``.

    Parameters
    ----------
    max_nanos
        The cap in nano-USD (1e-9 USD).

    Examples
    --------
    >>> cap = RequestCostCap(max_nanos=1_000_000_000)  # $1
    >>> cap.score_one({"cost_nanos": 40_000_000}) < 1.0 <= cap.score_one({"cost_nanos": 3_000_000_000})
    True

    """

    def __init__(self, max_nanos: int = 1_000_000_000) -> None:
        self.max_nanos = max_nanos

    def learn_one(self, x: dict) -> None:
        return None

    def score_one(self, x: dict) -> float:
        return x.get("cost_nanos", 0) / self.max_nanos

    def exceeded(self, cost_nanos: int) -> bool:
        return cost_nanos > self.max_nanos
