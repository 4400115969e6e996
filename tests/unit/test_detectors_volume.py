"""The detectors at production volume, through the engine: quiet on busy clean traffic,
fast on real incidents (issue 13). Seeded, event time only; each test well under a minute."""

import random

from tests.helpers import NOW_MS, engine, event
from tokenbrake.detectors import CacheRegression, TokenInflation

T0 = (NOW_MS - 30 * 3_600_000) // 3_600_000 * 3_600_000  # hour-aligned, in the past


def _minutes(e, rng, start_min, minutes, per_min, *, fail=0.015, storm=False, cached=0.0, feature="chat",
             offset=0):
    """``per_min`` calls a minute on acme x feature (gpt-4o); organic failures retried once,
    or a storm (80% of attempts failing, up to 4 attempts); ``cached`` = share of calls
    reading half their input from the prompt cache."""
    for minute in range(start_min, start_min + minutes):
        t = T0 + minute * 60_000
        for k in range(per_min):
            ts = t + k * 60_000 // per_min
            cache = 500 if rng.random() < cached else 0
            attempts = 4 if storm else (2 if rng.random() < fail else 1)
            for attempt in range(attempts):
                failed = attempt < attempts - 1 and (not storm or rng.random() < 0.8)
                offset += 1
                e.process(event(ts=ts + attempt * 800, feature_id=feature, attempt=attempt,
                                status="error" if failed else "ok", cached_input_tokens=cache), 0, offset)
                if not failed:
                    break
        e.tick()
    return offset


def _alerts(e, rule):
    return [a for a in e.drain().alerts if a.rule == rule and a.state == "firing"]


def test_retry_storm_quiet_at_200_calls_a_minute_with_organic_retries_then_fast_on_a_storm():
    e, rng = engine(), random.Random(7)
    offset = _minutes(e, rng, 0, 180, 200)  # three busy hours, 1.5% of calls failing and retried
    assert _alerts(e, "retry_storm") == []
    start = T0 + 180 * 60_000
    _minutes(e, rng, 180, 2, 20, storm=True, offset=offset)  # the provider fails on a 20 calls/min scope
    fired = _alerts(e, "retry_storm")
    assert len(fired) == 1
    assert fired[0].ts.timestamp() * 1000 - start < 30_000  # scored as failures arrive: seconds, not minutes


def test_runaway_loop_5x_on_a_100_calls_a_minute_scope_fires_within_two_closed_minutes():
    e, rng = engine(), random.Random(3)
    offset = _minutes(e, rng, 0, 90, 100, fail=0.0)
    assert _alerts(e, "cost_rate") == []
    start = T0 + 90 * 60_000
    _minutes(e, rng, 90, 3, 500, fail=0.0, offset=offset)  # an agent loop: 5x the calls, normal sizes
    fired = _alerts(e, "cost_rate")
    assert len(fired) == 1
    assert fired[0].ts.timestamp() * 1000 - start <= 2 * 60_000


def test_cache_collapse_fires_cache_regression():
    e, rng = engine(), random.Random(5)
    offset = _minutes(e, rng, 0, 240, 30, fail=0.0, cached=0.6)  # 60% of calls read the cache
    assert _alerts(e, "cache_regression") == []
    _minutes(e, rng, 240, 40, 30, fail=0.0, cached=0.02, offset=offset)
    fired = _alerts(e, "cache_regression")
    assert len(fired) == 1 and fired[0].scope.feature_id == "chat"


def _hourly(det, hours, level, rng):
    scores = []
    for h in hours:
        x = {"requests": 300, "median_input_tokens": level(h) * rng.uniform(0.97, 1.03)}
        score = det.score_one(x)
        scores.append(score)
        if score < 1.0:
            det.learn_one(x)
    return scores


def test_token_inflation_catches_8_percent_a_day_within_a_day_of_crossing_25_percent():
    det, rng = TokenInflation(), random.Random(1)
    growth_start = 24 * 4
    level = lambda h: 1000 * 1.08 ** (max(0, h - growth_start) / 24)  # noqa: E731
    scores = _hourly(det, range(24 * 10), level, rng)
    crossed = next(h for h in range(24 * 10) if level(h) >= 1250)
    first = next(h for h, s in enumerate(scores) if s >= 1.0)
    assert crossed - 12 <= first <= crossed + 24
    assert max(scores[:growth_start]) < 1.0


def test_token_inflation_stays_quiet_on_a_flat_level_and_fires_on_a_step():
    det, rng = TokenInflation(), random.Random(2)
    assert max(_hourly(det, range(24 * 14), lambda h: 1000, rng)) < 1.0
    assert det.score_one({"requests": 300, "median_input_tokens": 2000}) >= 1.0


def test_cache_regression_ignores_features_without_a_cache():
    det = CacheRegression()
    for _ in range(50):
        det.learn_one({"requests": 400, "cached_calls": 0, "input_tokens": 400_000, "cached_input_tokens": 0})
    assert det.score_one({"requests": 400, "cached_calls": 0, "input_tokens": 400_000,
                          "cached_input_tokens": 0}) == 0.0


def test_a_model_restored_from_an_earlier_class_layout_learns_afresh_instead_of_crashing():
    from tokenbrake.detectors import RetryStorm

    e, rng = engine(), random.Random(4)
    old = RetryStorm()
    del old.__dict__["_rate"]  # as pickled before the count-based rate existed
    old.__dict__["_baseline"] = object()
    e.detectors.models[("retry_storm", ("acme", "chat", "gpt-4o"))] = old
    _minutes(e, rng, 0, 5, 20, storm=True)
    assert [a.rule for a in e.drain().alerts if a.state == "firing"][:1] == ["retry_storm"]
    assert "_rate" in vars(e.detectors.models[("retry_storm", ("acme", "chat", "gpt-4o"))])
