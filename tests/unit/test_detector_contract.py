"""One contract, every detector in detectors.__all__ (after River's test_estimators)."""

import copy
import pickle
import random

import pytest

from tokenbrake import detectors

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


@pytest.fixture(params=[n for n in detectors.__all__ if n != "RULES"])
def name(request):
    return request.param


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
