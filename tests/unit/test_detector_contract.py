"""One contract, every detector in the registry (after River's test_estimators); the registry itself
holds every detector class the package exports, and the hub feeds each the features it declares."""

import copy
import dataclasses
import pickle
import random
from decimal import Decimal

import pytest

from tokenbrake import detectors
from tokenbrake.detectors.buckets import BUILTIN, nanos_to_usd
from tokenbrake.detectors.registry import BUCKETED, BY_RULE, REGISTRY
from tokenbrake.streams.decide import detection
from tokenbrake.streams.decide.board import ControlBoard
from tokenbrake.streams.emit.events import Emitted
from tokenbrake.streams.price import rates

NORMAL = {
    "RetryStorm": lambda r: {"requests": 60 + r.randrange(20), "retries": r.randrange(3), "errors": r.randrange(3)},
    "CostRate": lambda r: {"requests": 40 + r.randrange(10), "median_call_nanos": 3_000_000 + r.randrange(500_000),
                           "seconds": 300},
    "SpendSpike": None,  # needs an hour index: built below
    "TokenInflation": lambda r: {"requests": 100, "input_tokens": 100_000 + r.randrange(10_000),
                                 "median_input_tokens": 1000 + r.randrange(100)},
    "HeavyUser": lambda r: {f"user:u{i}": 1_000_000_000 + r.randrange(100_000_000) for i in range(60)},
    "RequestCostCap": lambda r: {"cost_nanos": r.randrange(1_000_000, 50_000_000)},
    "CacheRegression": lambda r: {"requests": 200, "cached_calls": 110 + r.randrange(20), "input_tokens": 200_000,
                                  "cached_input_tokens": 55_000 + r.randrange(10_000)},
}
SPIKE = {
    "RetryStorm": lambda r: {"requests": 200, "retries": 120, "errors": 100},
    "CostRate": lambda r: {"requests": 45, "median_call_nanos": 60_000_000, "seconds": 300},
    "TokenInflation": lambda r: {"requests": 100, "input_tokens": 250_000, "median_input_tokens": 2500},
    "HeavyUser": lambda r: {**{f"user:u{i}": 1_000_000_000 for i in range(60)}, "user:u0": 400_000_000_000},
    "RequestCostCap": lambda r: {"cost_nanos": 5_000_000_000},
    "CacheRegression": lambda r: {"requests": 200, "cached_calls": 3, "input_tokens": 200_000,
                                  "cached_input_tokens": 900},
}


def stream(name, n, seed=0):
    r = random.Random(seed)
    if name == "SpendSpike":
        return [{"spend": 1_000_000_000 + r.randrange(200_000_000), "hour": h, "day_to_date": (h % 24 + 1) * 10**9}
                for h in range(n)]
    return [NORMAL[name](r) for _ in range(n)]


def spike(name, hour):
    if name == "SpendSpike":
        return {"spend": 12_000_000_000, "hour": hour, "day_to_date": 12_000_000_000}
    return SPIKE[name](random.Random(1))


@pytest.fixture(params=[spec.cls.__name__ for spec in REGISTRY], ids=[spec.rule for spec in REGISTRY])
def name(request):
    return request.param


def _hub():
    out = Emitted()
    return detection.DetectorHub({}, out, ControlBoard(out))


def test_every_exported_detector_is_in_the_registry_once():
    exported = {getattr(detectors, n) for n in detectors.__all__ if n != "RULES"}
    assert sorted(c.__name__ for c in exported) == sorted(spec.cls.__name__ for spec in REGISTRY)
    assert len(BY_RULE) == len(REGISTRY) and detectors.RULES == {spec.rule: spec.cls for spec in REGISTRY}


def test_every_bucketed_detector_declares_how_its_bucket_is_scored():
    hub = _hub()
    for spec in BUCKETED:
        assert spec.bucket in BUILTIN or spec.bucket.add is not None, f"nothing fills {spec.rule}'s bucket"
        assert callable(spec.features_of), f"{spec.rule} declares no features_of"
    # the hub closes each bucket in the registry's order and scores the detectors on it in that order
    closing = [(bucket.name, [s.rule for s in specs]) for bucket, _, specs in hub._closing if specs]
    assert [name for name, _ in closing] == list(dict.fromkeys(s.bucket.name for s in BUCKETED))
    assert [rule for _, rules in closing for rule in rules] == [s.rule for s in BUCKETED]
    assert all(BY_RULE[rule].bucket.name == name for name, rules in closing for rule in rules)


def test_the_hub_scores_each_detector_on_the_features_it_declares():
    seen: dict[str, set[str]] = {spec.rule: set() for spec in BUCKETED}
    registry = []
    for spec in REGISTRY:
        class Recording(spec.cls):
            def score_one(self, x, _rule=spec.rule):
                seen[_rule].update(x)
                return super().score_one(x)
        registry.append(dataclasses.replace(spec, cls=Recording) if spec.bucket is not None else spec)
    out = Emitted()
    hub = detection.DetectorHub({}, out, ControlBoard(out), registry=tuple(registry))
    r = random.Random(5)
    for minute in range(3 * 60):
        for i in range(40):
            hub.observe("acme", "chat", f"u{i % 7}", "gpt-4o", minute * 60_000 + i * 1000, 2_000_000 + r.randrange(9),
                        1000 + r.randrange(50), retry=i % 9 == 0, error=i % 11 == 0, cached_tokens=300 * (i % 2))
        hub.advance(minute * 60_000)
    hub.advance(10 * 3_600_000)
    for spec in BUCKETED:
        assert seen[spec.rule], f"{spec.rule} was never scored"
        declared = set(spec.features)
        undeclared = {f for f in seen[spec.rule] if f not in declared and not (
            "user:*" in declared and f.startswith("user:"))}
        assert undeclared == set(), spec.rule


def test_observed_amounts_are_the_pricing_stages_usd():
    assert nanos_to_usd(1_234_567_891) == rates.nanos_to_usd(1_234_567_891) == Decimal("1.234567891")


def trained(name, n=24 * 9):
    det = getattr(detectors, name)()
    for x in stream(name, n):
        det.learn_one(x)
    return det


def test_score_one_changes_no_state(name):
    det = trained(name)
    before = pickle.dumps(det)
    det.score_one(stream(name, 24 * 9 + 1)[-1])
    det.score_one(spike(name, 24 * 9))
    assert pickle.dumps(det) == before


def test_same_params_same_scores(name):
    a, b = trained(name), trained(name)
    xs = stream(name, 24 * 9 + 5, seed=3)[-5:]
    assert [a.score_one(x) for x in xs] == [b.score_one(x) for x in xs]


def test_missing_features_do_not_crash(name):
    det = trained(name)
    score = det.score_one({"hour": 0} if name == "SpendSpike" else {})
    assert score == score and score >= 0  # a number, not NaN


def test_pickle_and_clone_round_trip(name):
    det = trained(name)
    x = spike(name, 24 * 9)
    assert pickle.loads(pickle.dumps(det)).score_one(x) == det.score_one(x)
    fresh = det.clone()
    assert type(fresh) is type(det) and fresh._get_params() == det._get_params()
    assert copy.deepcopy(det).score_one(x) == det.score_one(x)


def test_cold_detector_scores_without_flagging_normal_points(name):
    det = getattr(detectors, name)()
    assert det.score_one(stream(name, 1)[0]) < 1.0


def test_spikes_rank_above_normal_points(name):
    """A minimum ROC-AUC of 1.0 on a synthetic stream with injected spikes."""
    det = trained(name)
    normal = [det.score_one(x) for x in stream(name, 24 * 9 + 30, seed=9)[-30:]]
    spikes = [det.score_one(spike(name, 24 * 9 + i)) for i in range(5)]
    assert max(normal) < 1.0 <= min(spikes)
