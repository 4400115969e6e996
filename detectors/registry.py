"""The one registry of detectors: what each rule is, what it is scored on, over which scopes.

Adding a detector is one file in this package (a River-style class) and one line below. The
engine's detector hub (``streams/decide/detection.py``) takes its rule ids, classes and bucket
sizes from here; the contract test (``tests/unit/test_detector_contract.py``) runs over every entry;
the evaluation (``tokenbrake evaluate``) scores every rule listed here. A detector scored on a
bucket the hub does not fill yet also needs that bucket's closer in the hub, ``_close_<rule>``
(the contract test names the missing one).

>>> [spec.rule for spec in REGISTRY if spec.bucket_ms == MINUTE_MS]
['retry_storm', 'cost_rate']
>>> BY_RULE["spend_spike"].scopes
(('tenant',), ('tenant', 'feature'))
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenbrake.detectors.cache_regression import CacheRegression
from tokenbrake.detectors.cost_rate import CostRate
from tokenbrake.detectors.heavy_user import HeavyUser
from tokenbrake.detectors.request_cost_cap import RequestCostCap
from tokenbrake.detectors.retry_storm import RetryStorm
from tokenbrake.detectors.spend_spike import SpendSpike
from tokenbrake.detectors.token_inflation import TokenInflation

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
#: cost_rate also scores the window of this many minutes ending with the closed one (quiet scopes)
COST_WINDOW_MINUTES = 5


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """One detector: its rule id (``AlertEvent.rule``, part of the contract), its class, the event-time
    bucket it is scored on (``None``: scored on every call, by ``decide/caps.py``), the scopes it
    watches (``tenant``, ``feature``, ``model`` parts of the alert's scope), the features of the
    dict it scores (``user:*`` = one feature per user), whether it issues controls, and the rule
    whose bucket feeds it when it has none of its own."""

    rule: str
    cls: type
    bucket_ms: int | None
    scopes: tuple[tuple[str, ...], ...]
    features: tuple[str, ...]
    issues_controls: bool = False
    fed_by: str | None = None


#: in the order the hub closes buckets (and so the order of alerts closed at the same watermark)
REGISTRY: tuple[DetectorSpec, ...] = (
    DetectorSpec("retry_storm", RetryStorm, MINUTE_MS, (("tenant", "feature", "model"),),
                 ("requests", "retries", "errors")),
    DetectorSpec("cost_rate", CostRate, MINUTE_MS, (("tenant", "feature"),),
                 ("cost_nanos", "seconds", "requests", "costs", "window_cost_nanos", "window_seconds",
                  "window_requests", "window_costs"), issues_controls=True, fed_by="retry_storm"),
    DetectorSpec("token_inflation", TokenInflation, HOUR_MS, (("tenant", "feature"),),
                 ("requests", "input_tokens", "median_input_tokens")),
    DetectorSpec("spend_spike", SpendSpike, HOUR_MS, (("tenant",), ("tenant", "feature")),
                 ("spend", "hour", "day_to_date")),
    DetectorSpec("heavy_user", HeavyUser, HOUR_MS, (("tenant",),), ("user:*",)),
    DetectorSpec("cache_regression", CacheRegression, 10 * MINUTE_MS, (("tenant", "feature"),),
                 ("requests", "cached_calls", "input_tokens", "cached_input_tokens")),
    DetectorSpec("request_cost_cap", RequestCostCap, None, (("tenant",), ("tenant", "feature"),
                 ("tenant", "feature", "model")), ("cost_nanos",)),
)

BY_RULE: dict[str, DetectorSpec] = {spec.rule: spec for spec in REGISTRY}
#: the detectors the hub scores on closed buckets (everything but the per-call caps)
BUCKETED: tuple[DetectorSpec, ...] = tuple(spec for spec in REGISTRY if spec.bucket_ms is not None)
