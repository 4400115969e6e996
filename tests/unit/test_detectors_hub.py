"""The detector hub inside the engine: buckets close on event time, out of order is fine,
a flagged bucket is not learned, cost_rate issues and lifts a control."""

from tests.helpers import NOW_MS, engine, event


def test_out_of_order_minutes_do_not_break_the_hub():
    e = engine()
    for i in range(300):
        e.process(event(ts=NOW_MS + (i % 7) * 60_000 - (i % 3) * 90_000), 0, i)
        if i % 10 == 0:
            e.tick()
    e.watermark += 3_600_000
    e.tick()
    assert e.drain().alerts == []


def test_cost_rate_fires_once_issues_control_and_resolves():
    e = engine()
    t = (NOW_MS - 3 * 3_600_000) // 60_000 * 60_000  # minute-aligned: a deterministic delay
    offset = 0
    for minute in range(120):  # two quiet hours of gpt-4o-mini: the baseline
        for k in range(6):
            offset += 1
            e.process(event(ts=t + minute * 60_000 + k * 9_000, model="gpt-4o-mini", feature_id="summarize"), 0, offset)
        e.tick()
    e.drain()
    for minute in range(120, 140):  # a release moves the feature to a ~16x pricier model
        for k in range(6):
            offset += 1
            e.process(event(ts=t + minute * 60_000 + k * 9_000, model="gpt-4o", feature_id="summarize",
                            tenant_tier="enterprise"), 0, offset)
        e.tick()
    out = e.drain()
    fired = [a for a in out.alerts if a.rule == "cost_rate"]
    assert len(fired) == 1 and fired[0].state == "firing" and fired[0].scope.feature_id == "summarize"
    assert fired[0].tenant_tier == "enterprise"  # a pager route by tenant tier matches detector alerts too
    delay_min = (fired[0].ts.timestamp() * 1000 - (t + 120 * 60_000)) / 60_000
    assert delay_min <= 3
    assert [(c.action, c.downgrade_to) for c in out.controls] == [("downgrade", "gpt-4o-mini")]
    for minute in range(140, 200):  # back to the cheap model
        for k in range(6):
            offset += 1
            e.process(event(ts=t + minute * 60_000 + k * 9_000, model="gpt-4o-mini", feature_id="summarize"), 0, offset)
        e.tick()
    out = e.drain()
    assert [a.state for a in out.alerts if a.rule == "cost_rate"] == ["resolved"]
    assert [c.action for c in out.controls] == ["allow"]


def test_detectors_can_be_configured_and_disabled():
    import pytest

    from tokenbrake.streams.decide.policies import PolicyError, parse_policies

    assert parse_policies("detectors:\n  cost_rate: {factor: 6, action: throttle, max_rps: 2}\n")
    with pytest.raises(PolicyError):
        parse_policies("detectors:\n  nope: {}\n")
    with pytest.raises(PolicyError):
        parse_policies("detectors:\n  retry_storm: {unknown_knob: 1}\n")
    e = engine("detectors:\n  cost_rate: {enabled: false}\n")
    assert "cost_rate" not in e.detectors.enabled


def _baseline_then_release(e, start_minute: int, minutes: int, t: int, model: str, offset: int) -> int:
    for minute in range(start_minute, start_minute + minutes):
        for k in range(6):
            offset += 1
            e.process(event(ts=t + minute * 60_000 + k * 9_000, model=model, feature_id="summarize"), 0, offset)
        e.tick()
    return offset


def _persisted(e) -> list:
    """The decisions store as a restarted worker reads it back (JSON through the changelog)."""
    from tokenbrake.schemas.codec import dumps, loads

    store = e.stores["decisions"]
    return [(k, loads(dumps(v)), store.partition_of(k)) for k, v in store.items()]


def test_detector_baselines_survive_a_restart_only_when_sealed_and_unchanged():
    from tokenbrake.schemas.signing import Sealer

    sealer = Sealer("k1", b"secret", {"k1": b"secret"})
    t = (NOW_MS - 3 * 3_600_000) // 60_000 * 60_000
    before = engine(sealer=sealer)
    offset = _baseline_then_release(before, 0, 120, t, "gpt-4o-mini", 0)  # two quiet hours: the baseline
    assert before.save_baselines() > 0
    saved = _persisted(before)
    assert any(k.startswith("det|cost_rate|acme|summarize") for k, _, _ in saved)

    def after_restart(state: list, policies: str = "") -> list[str]:
        e = engine(policies, sealer=sealer)
        e.restore({"decisions": state})
        _baseline_then_release(e, 120, 20, t, "gpt-4o", offset)  # a release moves to a ~16x pricier model
        return [a.state for a in e.drain().alerts if a.rule == "cost_rate"]

    assert after_restart(saved) == ["firing"]  # the restored baseline knows the cheap normal
    assert after_restart([]) == []  # without it, the expensive model is learned as the normal
    assert all(v["v"] == 2 for k, v, _ in saved if k.startswith("det|"))
    previous = [(k, [v["model"], v["incident"], v["params"], v["saved_ms"]] if k.startswith("det|") else v, p)
                for k, v, p in saved]  # the previous release's records: lists
    assert after_restart(previous) == ["firing"]
    tampered = [(k, {**v, "model": [v["model"][0], "0" * 64, v["model"][2]]} if k.startswith("det|") else v, p)
                for k, v, p in saved]
    assert after_restart(tampered) == []  # a record that does not verify is never unpickled
    assert after_restart(saved, "detectors:\n  cost_rate: {factor: 3.5}\n") == []  # re-parameterised: afresh


def test_a_minute_the_watermark_closed_is_final_a_late_event_does_not_reopen_it():
    """A late event's closed minute is not reopened: the detectors would judge (and learn from)
    a fragment of a minute as a whole one, on every tick while late events trickle in. Its
    spend is still counted, and its hour (still open) still gets it."""
    import pickle

    e = engine()
    hub = e.detectors
    t = (NOW_MS - 3_600_000) // 3_600_000 * 3_600_000  # the start of an hour
    offset = 0
    for minute in range(5):
        for k in range(20):
            offset += 1
            e.process(event(ts=t + minute * 60_000 + k * 2_000, attempt=k % 2), 0, offset)
        e.tick()
    e.watermark = t + 5 * 60_000 + 30_000  # minutes 0-4 closed (lateness 10 s)
    e.tick()
    models = pickle.dumps(sorted(hub.models.items()))
    spent = e.status()["spend"][0]["today_usd"]
    e.process(event(ts=t + 60_000, attempt=1), 0, offset + 1)  # minute 1, long closed, with a retry
    assert t + 60_000 not in hub._open["calls_minute"]  # not reopened
    assert sum(v[0] for v in hub._open["tokens_hour"][t].values()) == 101  # its hour is still open
    e.watermark += 60_000
    e.tick()
    assert pickle.dumps(sorted(hub.models.items())) == models  # nothing judged or learned from a fragment
    assert e.status()["spend"][0]["today_usd"] > spent  # the spend is counted all the same
