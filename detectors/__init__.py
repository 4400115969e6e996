"""River-style anomaly detectors. Each scores a dict of features with ``score_one`` (1.0 or
more = flag) and learns with ``learn_one``; the engine never lets one learn from a point it
flagged. Rule ids (AlertEvent.rule) are part of the contract; ``registry.REGISTRY`` declares
each detector's rule id, bucket, scopes and features."""

from tokenbrake.detectors.cache_regression import CacheRegression
from tokenbrake.detectors.cost_rate import CostRate
from tokenbrake.detectors.heavy_user import HeavyUser
from tokenbrake.detectors.registry import REGISTRY
from tokenbrake.detectors.request_cost_cap import RequestCostCap
from tokenbrake.detectors.retry_storm import RetryStorm
from tokenbrake.detectors.spend_spike import SpendSpike
from tokenbrake.detectors.token_inflation import TokenInflation

#: rule id -> detector class (from the registry)
RULES = {spec.rule: spec.cls for spec in REGISTRY}

__all__ = ["RULES", "CacheRegression", "CostRate", "HeavyUser", "RequestCostCap", "RetryStorm", "SpendSpike",
           "TokenInflation"]
