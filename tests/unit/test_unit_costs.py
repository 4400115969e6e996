"""Unit-cost policies (decide.unit_costs): cost per outcome and per session, exact, counted
once under redelivery, surviving a restart, resolved at the period's end."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import NOW_MS, engine, event
from tokenbrake.schemas.outcome import OutcomeEvent
from tokenbrake.streams.aggregate.periods import DAY_MS
from tokenbrake.streams.decide.policies import PolicyError, parse_policies
from tokenbrake.streams.ingest.dedupe import Seen

PER_TICKET = """
unit_costs:
  - id: chat-per-ticket
    scope: {tenant: "*", feature: chat}
    per: ticket_resolved
    period: day
    max_usd: "0.01"
"""
WITH_ACTION = PER_TICKET + """    action: {action: downgrade, to_model: gpt-4o-mini}
"""
PER_SESSION = """
unit_costs:
  - {id: chat-per-session, scope: {feature: chat}, per: session, max_usd: "0.005", min_count: 2}
"""


def calls(e, n, start=0, **kw):
    for i in range(n):
        e.process(event(ts=NOW_MS + start + i, **kw), 0, start + i)


def outcome(oid, ts_ms=NOW_MS, kind="ticket_resolved", **kw):
    return OutcomeEvent(outcome_id=oid, ts=datetime.fromtimestamp(ts_ms / 1000, UTC), tenant_id=kw.pop("tenant", "acme"),
                        feature_id=kw.pop("feature", "chat"), kind=kind, **kw)


def tick(e):
    e.tick()
    return e.drain()


def restarted(e, policies):
    e2 = engine(policies)
    e2.restore({n: [(k, v, 0) for k, v in s.items()] for n, s in e.stores.items()})
    e2.watermark = e.watermark
    return e2


def test_cost_per_outcome_fires_then_resolves_as_outcomes_arrive():
    e = engine(PER_TICKET)
    calls(e, 10)  # ten gpt-4o calls: $0.035
    assert tick(e).alerts == []  # no outcome yet: min_count 1 not reached, nothing judged
    assert e.record_outcome(outcome("o1")) is Seen.NEW
    out = tick(e)
    (fired,) = out.alerts
    assert (fired.rule, fired.state, fired.severity, fired.policy_id) == ("unit_cost", "firing", "warning",
                                                                          "chat-per-ticket")
    assert fired.observed == Decimal("0.035") and fired.threshold == Decimal("0.01")
    assert out.controls == []  # alert-only policy
    assert tick(e).alerts == []  # still over: nothing new
    for oid in ("o2", "o3", "o4"):
        e.record_outcome(outcome(oid))
    (resolved,) = tick(e).alerts  # $0.035 / 4 = $0.00875
    assert (resolved.state, resolved.observed, resolved.dedup_key) == ("resolved", Decimal("0.00875"),
                                                                       fired.dedup_key)


def test_a_redelivered_outcome_never_lowers_the_unit_cost():
    e = engine(PER_TICKET)
    calls(e, 10)
    assert [e.record_outcome(outcome("o1")) for _ in range(5)] == [Seen.NEW] + [Seen.DUPLICATE] * 4
    (fired,) = tick(e).alerts
    assert fired.observed == Decimal("0.035")  # counted once: $0.035 / 1
    e2 = restarted(e, PER_TICKET)  # after a restart, the persisted mark still dedupes it
    assert e2.record_outcome(outcome("o1")) is Seen.DUPLICATE
    calls(e2, 1, start=100)
    assert tick(e2).alerts == []  # still over: the restored state does not fire again


def test_outcomes_of_other_kinds_features_or_days_do_not_count():
    e = engine(PER_TICKET)
    calls(e, 10)
    e.record_outcome(outcome("k", kind="pr_merged"))
    e.record_outcome(outcome("f", feature="search"))
    assert e.record_outcome(outcome("old", ts_ms=NOW_MS - 40 * DAY_MS)) is Seen.LATE  # no current day or month
    e.record_outcome(outcome("o1"))
    (fired,) = tick(e).alerts
    assert fired.observed == Decimal("0.035")


def test_action_is_a_control_restored_after_restart_and_withdrawn_at_the_period_end():
    e = engine(WITH_ACTION)
    calls(e, 10)
    e.record_outcome(outcome("o1"))
    out = tick(e)
    (control,) = out.controls
    assert (control.action, control.downgrade_to, control.reason.rule) == ("downgrade", "gpt-4o-mini", "unit_cost")
    assert control.scope.key() == out.alerts[0].scope.key() and out.alerts[0].severity == "critical"
    assert control.expires_at is not None  # ends with the day even if the allow were lost
    e2 = restarted(e, WITH_ACTION)
    assert e2.status()["controls"][0]["action"] == "downgrade"
    assert tick(e2).controls == []
    e2.watermark = NOW_MS + DAY_MS  # the next day: a new period, nothing counted yet
    out = tick(e2)
    assert [c.action for c in out.controls] == ["allow"] and [a.state for a in out.alerts] == ["resolved"]
    assert e2.status()["controls"] == []


def test_removed_policy_resolves_what_it_fired():
    e = engine(WITH_ACTION)
    calls(e, 10)
    e.record_outcome(outcome("o1"))
    tick(e)
    e2 = restarted(e, "")
    out = tick(e2)
    assert [a.state for a in out.alerts] == ["resolved"] and [c.action for c in out.controls] == ["allow"]


def test_cost_per_session_counts_each_session_once():
    e = engine(PER_SESSION)
    calls(e, 3, session_id="s1")  # $0.0105
    assert tick(e).alerts == []  # one session: min_count 2 not reached
    calls(e, 1, start=10, session_id="s2")  # $0.014 over two sessions = $0.007 > $0.005
    (fired,) = tick(e).alerts
    assert fired.observed == Decimal("0.007") and "per session" in fired.summary
    calls(e, 1, start=20, session_id="s1")  # s1 again: still two sessions, $0.0175
    calls(e, 1, start=30, session_id="s3")
    calls(e, 1, start=40, session_id="s4")  # $0.0245 over 4 = $0.006125: still over
    assert tick(e).alerts == []
    e2 = restarted(e, PER_SESSION)  # counts are re-derived from the persisted session marks
    for s in ("s5", "s6", "s7"):
        calls(e2, 1, start=50 + ord(s[1]), session_id=s)  # $0.035 over 7 = $0.005: not above
    (resolved,) = tick(e2).alerts
    assert (resolved.state, resolved.observed) == ("resolved", Decimal("0.005"))
    calls(e2, 1, start=90, session_id="s1")  # $0.0385 over 7 = $0.0055
    (again,) = tick(e2).alerts
    assert again.observed == Decimal("0.0055")


def test_a_session_policy_added_mid_day_judges_from_the_next_day():
    e = engine("")
    calls(e, 10, session_id="s0")  # spent before the policy existed: those sessions are unknown to it
    e2 = restarted(e, PER_SESSION)
    calls(e2, 2, start=100, session_id="a")
    calls(e2, 2, start=200, session_id="b")
    assert tick(e2).alerts == []  # $0.049 over 2 sessions would be over, but the day started unseen
    day2 = NOW_MS + DAY_MS
    for i, s in enumerate(("x", "y")):
        e2.process(event(ts=day2 + i, session_id=s), 0, 1000 + i)
        e2.process(event(ts=day2 + 10 + i, session_id=s), 0, 1010 + i)
    (fired,) = tick(e2).alerts
    assert fired.observed == Decimal("0.007")


def test_expire_drops_the_marks_of_closed_periods():
    e = engine(PER_TICKET + """  - {id: chat-per-session, scope: {feature: chat}, per: session, max_usd: "1"}
""")
    calls(e, 1, session_id="s1")
    e.record_outcome(outcome("o1"))
    keys = [k for k, _ in e.stores["decisions"].items() if k[:3] in ("uo|", "us|")]
    assert len(keys) == 2
    assert e.unit_costs.expire(NOW_MS + DAY_MS) == 0  # yesterday's marks are kept a day
    assert e.unit_costs.expire(NOW_MS + 40 * DAY_MS) >= 2
    assert not any(k[:3] in ("uo|", "us|") for k, _ in e.stores["decisions"].items())


@pytest.mark.parametrize("bad, where", [
    ('  - {id: x, per: ticket_resolved, max_usd: 0.1}\n', "policies.yaml:3: unit_costs.0.max_usd"),
    ('  - {id: x, per: Tickets, max_usd: "0.1"}\n', "policies.yaml:3: unit_costs.0.per"),
    ('  - {id: x, per: t, max_usd: "0.1", period: week}\n', "policies.yaml:3: unit_costs.0.period"),
    ('  - {id: x, per: t, max_usd: "0.1", action: {action: downgrade}}\n', "policies.yaml:3: unit_costs.0.action"),
])
def test_invalid_unit_cost_policies_name_file_line_and_field(bad, where):
    with pytest.raises(PolicyError) as err:
        parse_policies("# policies\nunit_costs:\n" + bad, "policies.yaml")
    assert where in str(err.value)


def test_unit_cost_ids_share_the_policy_id_space():
    with pytest.raises(PolicyError, match="unique: x"):
        parse_policies('budgets: [{id: x, period: day, limit_usd: "1"}]\n'
                       'unit_costs: [{id: x, per: t, max_usd: "1"}]\n')


def test_a_typo_in_a_unit_cost_downgrade_target_is_caught_at_start_up(tmp_path):
    from tokenbrake.streams.decide.named_models import check_policies_file

    path = tmp_path / "p.yaml"
    path.write_text(PER_TICKET + "    action: {action: downgrade, to_model: gpt-4o-mni}\n")
    (error,) = check_policies_file(path, None).errors
    assert error.startswith(f"{path}:8: unit_costs.0.action.to_model: unknown model 'gpt-4o-mni'")


def test_the_readme_unit_cost_example_is_a_valid_policies_file():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("## For FinOps", 1)[1].split("\n## ", 1)[0]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    policies = parse_policies(block, "README.md")
    assert [(u.id, u.per, u.max_usd) for u in policies.unit_costs] == [
        ("support-cost-per-ticket", "ticket_resolved", Decimal("0.10")), ("architecture-review", "session",
                                                                          Decimal("0.10"))]
    from textwrap import dedent

    from tokenbrake.streams.decide import policies as module

    example = parse_policies(dedent(module.__doc__.split("Example::", 1)[1]))  # the module's own example
    assert [u.id for u in example.unit_costs] == ["support-cost-per-ticket"]


def test_outcome_messages_are_parsed_or_refused_with_a_reason():
    from tokenbrake.schemas.codec import dumps
    from tokenbrake.streams.ingest.decode import MAX_MESSAGE_BYTES
    from tokenbrake.streams.outcome_flow import parse_outcome

    good = outcome("o1", value="12.50")
    assert parse_outcome(dumps(good.model_dump(mode="json"))) == good
    refused = {value: parse_outcome(value) for value in (
        b"", b"{", b"x" * (MAX_MESSAGE_BYTES + 1), b'{"outcome_id": "o1"}',
        dumps({**good.model_dump(mode="json"), "value": 0.5}))}
    assert [r.reason for r in refused.values()] == ["empty", "not_json", "too_large", "invalid_outcome",
                                                     "invalid_outcome"]
    assert all(r.payload == value for value, r in refused.items())  # the bytes, for the dead-letter topic
    assert "ts: Field required" in refused[b'{"outcome_id": "o1"}'].error


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.sampled_from([f"o{i}" for i in range(8)]), min_size=1, max_size=30),
       restart_at=st.integers(0, 30), seed=st.randoms(use_true_random=False))
def test_redelivered_outcomes_in_any_order_and_across_a_restart_count_once(ids, restart_at, seed):
    """The judged unit cost is spend / distinct outcomes, whatever the repeats, their order and
    where a restart falls."""
    policy = PER_TICKET.replace('"0.01"', '"0.000001"')  # always over: every judgement is an alert
    e = engine(policy)
    calls(e, 3)
    seed.shuffle(ids)
    for i, oid in enumerate(ids):
        if i == restart_at:
            e = restarted(e, policy)
        e.record_outcome(outcome(oid))
    if restart_at >= len(ids):
        e = restarted(e, policy)
    calls(e, 1, start=100)  # one more call: the scope is judged on the next tick, for the first time
    (fired,) = tick(e).alerts
    assert fired.observed == (Decimal("0.014") / len(set(ids))).quantize(Decimal("0.000000001"))
