"""The one registry of detectors: what each rule is, what it is scored on, over which scopes.

Adding a detector is one file in this package and one line below. The file holds the River-style
class and, for a detector scored on closed buckets, ``features_of``: what it scores on one closed
bucket (and optionally ``early``: scoring the still-open minute). The line names the rule, the
class, the bucket (``buckets.py``: a built-in one, or a new one with its own ``add``), the scopes,
the features and those functions. The engine's detector hub (``streams/decide/detection.py``)
has one loop and no per-rule code: it closes each bucket in the order of the first detector on it
here, and scores the detectors on it in this order; the contract
test (``tests/unit/test_detector_contract.py``) runs over every entry; the evaluation
(``tokenbrake evaluate``) scores every rule listed here.

>>> [spec.rule for spec in REGISTRY if spec.bucket_ms == MINUTE_MS]
['retry_storm', 'cost_rate']
>>> BY_RULE["spend_spike"].scopes
(('tenant',), ('tenant', 'feature'))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tokenbrake.detectors import cache_regression, cost_rate, heavy_user, retry_storm, spend_spike, token_inflation
from tokenbrake.detectors.buckets import (
    CACHE_10_MINUTES,
    CALLS_MINUTE,
    MINUTE_MS,
    SPEND_HOUR,
    TENANTS_HOUR,
    TOKENS_HOUR,
    Bucket,
    FeaturesOf,
)
from tokenbrake.detectors.cache_regression import CacheRegression
from tokenbrake.detectors.cost_rate import COST_WINDOW_MINUTES, CostRate
from tokenbrake.detectors.heavy_user import HeavyUser
from tokenbrake.detectors.request_cost_cap import RequestCostCap
from tokenbrake.detectors.retry_storm import RetryStorm
from tokenbrake.detectors.spend_spike import SpendSpike
from tokenbrake.detectors.token_inflation import TokenInflation

__all__ = ["BUCKETED", "BY_RULE", "COST_WINDOW_MINUTES", "MINUTE_MS", "REGISTRY", "DetectorSpec"]

#: ``early(detector, open counters of one scope)``: (features, observed) to score now, or None
Early = Callable[[Any, Any], tuple[dict[str, Any], Decimal] | None]


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """One detector: its rule id (``AlertEvent.rule``, part of the contract), its class, the event-time
    bucket it is scored on (``None``: scored on every call, by ``decide/caps.py``), the scopes it
    watches (``tenant``, ``feature``, ``model`` parts of the alert's scope), the features of the
    dict it scores (``user:*`` = one feature per user), what it scores on one closed bucket
    (``features_of``), what it scores on the open minute when a failure lands (``early``,
    ``CALLS_MINUTE`` only), and whether it issues controls (the class may word the control's reason:
    ``control_reason(score) -> (threshold, detail)``)."""

    rule: str
    cls: type
    bucket: Bucket | None
    scopes: tuple[tuple[str, ...], ...]
    features: tuple[str, ...]
    features_of: FeaturesOf | None = None
    early: Early | None = None
    issues_controls: bool = False

    @property
    def bucket_ms(self) -> int | None:
        return None if self.bucket is None else self.bucket.size_ms


#: the order of the hub's closing and scoring, so of the alerts closed at the same watermark (see above)
REGISTRY: tuple[DetectorSpec, ...] = (
    DetectorSpec("retry_storm", RetryStorm, CALLS_MINUTE, (("tenant", "feature", "model"),),
                 ("requests", "retries", "errors"), retry_storm.features_of, early=retry_storm.early),
    DetectorSpec("cost_rate", CostRate, CALLS_MINUTE, (("tenant", "feature"),),
                 ("cost_nanos", "seconds", "requests", "costs", "window_cost_nanos", "window_seconds",
                  "window_requests", "window_costs"), cost_rate.features_of, issues_controls=True),
    DetectorSpec("token_inflation", TokenInflation, TOKENS_HOUR, (("tenant", "feature"),),
                 ("requests", "input_tokens", "median_input_tokens"), token_inflation.features_of),
    DetectorSpec("spend_spike", SpendSpike, SPEND_HOUR, (("tenant",), ("tenant", "feature")),
                 ("spend", "hour", "day_to_date"), spend_spike.features_of),
    DetectorSpec("heavy_user", HeavyUser, TENANTS_HOUR, (("tenant",),), ("user:*",), heavy_user.features_of),
    DetectorSpec("cache_regression", CacheRegression, CACHE_10_MINUTES, (("tenant", "feature"),),
                 ("requests", "cached_calls", "input_tokens", "cached_input_tokens"), cache_regression.features_of),
    DetectorSpec("request_cost_cap", RequestCostCap, None, (("tenant",), ("tenant", "feature"),
                 ("tenant", "feature", "model")), ("cost_nanos",)),
)

BY_RULE: dict[str, DetectorSpec] = {spec.rule: spec for spec in REGISTRY}
#: the detectors the hub scores on closed buckets (everything but the per-call caps)
BUCKETED: tuple[DetectorSpec, ...] = tuple(spec for spec in REGISTRY if spec.bucket_ms is not None)
