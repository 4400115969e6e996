from decimal import Decimal

from tests.helpers import NOW_MS, engine, event
from tokenbrake.streams.aggregate.periods import DAY_MS

POLICY = """
budgets:
  - id: acme-day
    scope: {tenant: acme}
    period: day
    limit_usd: "0.035"          # ten gpt-4o calls of 1000 in / 100 out
    warn_at: [0.8]
    on_exceed:
      - {at: 1.0, action: downgrade, to_model: gpt-4o-mini}
      - {at: 2.0, action: block}
"""


def run(e, n, **kw):
    for i in range(n):
        e.process(event(ts=kw.get("ts", NOW_MS) + i, **{k: v for k, v in kw.items() if k != "ts"}), 0, i)
    return e.drain()


def test_escalation_emits_one_event_per_transition():
    e = engine(POLICY)
    out = run(e, 25, tenant_tier="enterprise")
    assert {a.tenant_tier for a in out.alerts} == {"enterprise"}
    assert [c.action for c in out.controls] == ["downgrade", "block"]
    assert out.controls[0].downgrade_to == "gpt-4o-mini"
    assert [(a.severity, a.state) for a in out.alerts] == [("warning", "firing"), ("critical", "firing"),
                                                           ("critical", "firing")]
    assert out.controls[0].reason.threshold == Decimal("0.035")
    assert out.controls[0].expires_at is not None  # a missed allow still ends at the period's end
    assert run(e, 10).controls == []  # staying over the limit emits nothing more


def test_other_tenants_are_untouched():
    e = engine(POLICY)
    out = run(e, 30, tenant_id="globex")
    assert out.controls == [] and out.alerts == []


def test_rollover_emits_allow_and_resolved():
    e = engine(POLICY)
    run(e, 25)
    e.watermark = NOW_MS + DAY_MS
    e.tick()
    out = e.drain()
    assert [c.action for c in out.controls] == ["allow"]
    assert [a.state for a in out.alerts] == ["resolved"]
    assert e.status()["controls"] == []


def test_restored_engine_does_not_refire_and_still_rolls_over():
    e = engine(POLICY)
    run(e, 15)
    e2 = engine(POLICY)
    e2.restore({n: [(k, v, 0) for k, v in s.items()] for n, s in e.stores.items()})
    assert e2.status()["controls"][0]["action"] == "downgrade"
    assert run(e2, 1, ts=NOW_MS + 100).controls == []
    e2.watermark = NOW_MS + DAY_MS
    e2.tick()
    assert [c.action for c in e2.drain().controls] == ["allow"]


def test_policy_change_resolves_old_state():
    e = engine(POLICY)
    run(e, 25)
    e2 = engine(POLICY.replace('"0.035"', '"100"'))
    e2.restore({n: [(k, v, 0) for k, v in s.items()] for n, s in e.stores.items()})
    e2.tick()
    out = e2.drain()
    assert [c.action for c in out.controls] == ["allow"]
    assert any(a.state == "resolved" for a in out.alerts)


def test_strongest_control_wins_on_a_scope():
    e = engine(POLICY + """
  - id: acme-month
    scope: {tenant: acme}
    period: month
    limit_usd: "0.01"
    action: {action: throttle, max_rps: 1}
""")
    out = run(e, 12)
    assert [c.action for c in out.controls] == ["throttle"]  # downgrade at call 10 is weaker than throttle
    e.watermark = NOW_MS + DAY_MS
    e.tick()
    assert e.drain().controls == []  # the monthly throttle still holds after the day rolls over


def test_rolling_window_decays():
    e = engine("""
budgets:
  - id: burst
    scope: {tenant: "*", feature: chat}
    period: rolling:5m
    limit_usd: "0.01"
    action: {action: throttle, max_rps: 2}
""")
    out = run(e, 4)
    assert [(c.action, c.scope.feature_id) for c in out.controls] == [("throttle", "chat")]
    e.watermark = NOW_MS + 6 * 60_000
    e.tick()
    assert [c.action for c in e.drain().controls] == ["allow"]


def test_late_event_for_closed_day_counts_but_decides_nothing():
    e = engine(POLICY)
    e.process(event(ts=NOW_MS), 0, 0)
    out = run(e, 25, ts=NOW_MS - DAY_MS)
    assert out.controls == []
    assert e.status()["counts"]["new"] == 26


def test_user_and_tier_scopes():
    e = engine("""
budgets:
  - id: per-user
    scope: {tenant: "*", user: "*", tier: free}
    period: day
    limit_usd: "0.007"
    action: {action: block}
""")
    out = run(e, 3, tenant_tier="free", user_id="heavy")
    run(e, 3, tenant_tier="pro", user_id="other")
    assert [(c.action, c.scope.user_id) for c in out.controls] == [("block", "heavy")]


def test_request_cost_cap_fires_once_per_day():
    e = engine("""
request_cost_caps:
  - {id: cap, max_usd: "0.50"}
""")
    out = run(e, 3, input_tokens=200_000, output_tokens=10_000)  # $0.60 each
    assert [a.rule for a in out.alerts] == ["request_cost_cap"]
    assert out.alerts[0].observed == Decimal("0.6")


def test_request_cost_cap_resolves_when_its_day_is_over_once_even_after_a_restart():
    e = engine("""
request_cost_caps:
  - {id: cap, max_usd: "0.50"}
""")
    run(e, 1, input_tokens=200_000, output_tokens=10_000)
    e.watermark = NOW_MS + DAY_MS
    e.tick()
    out = e.drain()
    assert [(a.rule, a.state, a.policy_id) for a in out.alerts] == [("request_cost_cap", "resolved", "cap")]
    e2 = engine("request_cost_caps: [{id: cap, max_usd: '0.50'}]")
    e2.restore({n: [(k, v, 0) for k, v in s.items()] for n, s in e.stores.items()})
    e2.watermark = NOW_MS + DAY_MS + 120_000
    e2.tick()
    assert e2.drain().alerts == []  # resolved once, not again by the restarted worker


def test_with_no_policies_file_a_call_over_one_dollar_alerts_and_budgets_warn_at_80_percent():
    from tokenbrake.streams.decide.policies import load_policies, parse_policies

    defaults = load_policies(None)
    assert [(c.id, c.max_usd) for c in defaults.request_cost_caps] == [("default-1usd", Decimal("1.00"))]
    assert parse_policies("request_cost_caps: []").request_cost_caps == []
    budget = parse_policies("budgets: [{id: b, period: day, limit_usd: '10'}]").budgets[0]
    assert budget.warn_at == [Decimal("0.8")]
    assert parse_policies("budgets: [{id: b, period: day, limit_usd: '10', warn_at: []}]").budgets[0].warn_at == []
    e = engine()
    assert e.detectors.config["spend_spike"].enabled and e.detectors._model("spend_spike", ("acme",)).day_factor == 2
    out = run(e, 2, input_tokens=400_000, output_tokens=10_000, tenant_tier="pro")  # $1.10 each
    assert [(a.rule, a.policy_id, a.observed, a.tenant_tier) for a in out.alerts] == \
        [("request_cost_cap", "default-1usd", Decimal("1.1"), "pro")]  # the tier: routes can match on it


def test_unpriced_model_alerts_once():
    e = engine()
    out = run(e, 3, model="mystery-model")
    assert [a.rule for a in out.alerts] == ["unpriced_model"]
    assert e.counts["unpriced"] == 3


def _as_version_1(stores):
    """The stores as the previous release wrote them: budget levels as positional lists."""
    out = {}
    for name, store in stores.items():
        items = []
        for key, value in store.items():
            if key.startswith("b|"):
                assert value["v"] == 2  # what this release writes
                value = [value["period"], value["level"], value["fingerprint"], value["scope"], value["wish"]]
            items.append((key, value, 0))
        out[name] = items
    return out


def test_a_worker_restores_the_previous_releases_budget_levels():
    """Budget levels are versioned records (streams.state.records.BudgetLevel); the positional
    lists the previous release wrote are still read: nothing re-fires, the control stays in
    force, the period still rolls over, and what is written next is the current version."""
    e = engine(POLICY)
    run(e, 15)
    e2 = engine(POLICY)
    e2.restore(_as_version_1(e.stores))
    assert e2.status()["controls"][0]["action"] == "downgrade"
    for i in range(10):  # offsets past the restored ones: new messages
        e2.process(event(ts=NOW_MS + 100 + i), 0, 100 + i)
        if i == 0:
            assert e2.drain().controls == []  # the same level: no re-fire
    assert [c.action for c in e2.drain().controls] == ["block"]  # the next step still fires
    assert all(v["v"] == 2 for k, v in e2.stores["decisions"].items() if k.startswith("b|"))
    e2.watermark = NOW_MS + DAY_MS
    e2.tick()
    assert [c.action for c in e2.drain().controls] == ["allow"]
