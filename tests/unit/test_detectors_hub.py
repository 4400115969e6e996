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
            e.process(event(ts=t + minute * 60_000 + k * 9_000, model="gpt-4o", feature_id="summarize"), 0, offset)
        e.tick()
    out = e.drain()
    fired = [a for a in out.alerts if a.rule == "cost_rate"]
    assert len(fired) == 1 and fired[0].state == "firing" and fired[0].scope.feature_id == "summarize"
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

    from streams.decide.policies import PolicyError, parse_policies

    assert parse_policies("detectors:\n  cost_rate: {factor: 6, action: throttle, max_rps: 2}\n")
    with pytest.raises(PolicyError):
        parse_policies("detectors:\n  nope: {}\n")
    with pytest.raises(PolicyError):
        parse_policies("detectors:\n  retry_storm: {unknown_knob: 1}\n")
    e = engine("detectors:\n  cost_rate: {enabled: false}\n")
    assert "cost_rate" not in e.detectors.enabled
