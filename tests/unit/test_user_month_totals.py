"""Per-user month totals are kept only while a budget per user and month reads them.

Almost every event opens a user's buckets (100,000 users in the bench), so the month bucket
nothing reads was a key to hold and a changelog record to write per event. These tests pin
what leaving it out must not change: every decision, every other total, the ClickHouse
rollups; and what it must do: keep the totals the moment a budget needs them, delete stale
ones, and say when a month's user totals began after users had spent in it.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import NOW_MS, engine, event
from tokenbrake.streams.aggregate.periods import DAY_MS, month_of
from tokenbrake.streams.engine import EngineConfig
from tokenbrake.streams.sink.rollups import keep_totals
from tokenbrake.streams.state.keys import MONTH, bucket_kind, is_user_scope

USER_MONTH = """
budgets:
  - {id: user-month, scope: {tenant: "*", user: "*"}, period: month, limit_usd: "0.01", warn_at: [0.5],
     action: {action: block}}
"""
OTHERS = """
budgets:
  - {id: user-day, scope: {tenant: "*", user: "*"}, period: day, limit_usd: "0.008", action: {action: block}}
  - {id: tenant-month, scope: {tenant: "*"}, period: month, limit_usd: "0.02", warn_at: [0.5],
     action: {action: throttle, max_rps: 1}}
request_cost_caps:
  - {id: cap, max_usd: "0.004"}
"""
ALWAYS = EngineConfig(user_month_totals=True)


def user_months(e) -> list[str]:
    return sorted(k for k in e.stores["aggregates"].data if bucket_kind(k) == MONTH and is_user_scope(k))


def stores(e) -> dict:
    """What a restarted worker reads back: every store's (key, value, partition)."""
    return {name: [(k, v, 0) for k, v in s.items()] for name, s in e.stores.items()}


def feed(e, events) -> list:
    out = []
    for i, ev in enumerate(events):
        e.process(ev, 0, i)
        d = e.drain()
        out.append(([(c.action, c.scope, c.reason) for c in d.controls],
                    [(a.rule, a.state, a.policy_id) for a in d.alerts]))
    return out


def test_without_a_user_month_budget_no_user_month_bucket_is_kept_and_nothing_else_changes():
    events = [event(user_id=f"u{i % 3}", feature_id=f"f{i % 2}", ts=NOW_MS + i * 1000) for i in range(12)]
    auto, always = engine(OTHERS), engine(OTHERS, config=ALWAYS)
    assert feed(auto, events) == feed(always, events)  # the same decisions, event by event
    assert user_months(auto) == [] and len(user_months(always)) == 3
    kept = {k: v for k, v in always.stores["aggregates"].data.items() if k not in user_months(always)}
    assert auto.stores["aggregates"].data == kept  # every other total is the same
    rollups_auto, rollups_always = {}, {}
    keep_totals(((k, v, 0) for k, v in auto.totals()), 1, rollups_auto)
    keep_totals(((k, v, 0) for k, v in always.totals()), 1, rollups_always)
    assert rollups_auto == rollups_always  # what ClickHouse stores: user month totals never were rows
    rows = {r["scope"]: r for r in auto.status(limit=0)["spend"]}
    assert rows["t=acme|u=u1"]["month_usd"] is None  # not kept: not shown as zero
    assert rows["t=acme"]["month_usd"] == always.status(limit=0)["spend"][0]["month_usd"]
    assert auto.status()["user_month_totals"].startswith("not kept")


def test_a_user_month_budget_keeps_them_and_fires_on_the_crossing_event():
    e = engine(USER_MONTH)
    out = feed(e, [event(user_id="heavy", ts=NOW_MS + i * 1000) for i in range(4)])  # $0.0035 each
    # $0.007 crosses the warning at $0.005, $0.0105 the limit: the third event blocks the user
    assert [[a[:2] for a in alerts] for _, alerts in out] == [[], [("budget", "firing")], [("budget", "firing")], []]
    assert [[(action, scope.user_id) for action, scope, _ in controls] for controls, _ in out] == \
        [[], [], [("block", "heavy")], []]
    assert user_months(e) == [f"M{month_of(NOW_MS)}|t=acme|u=heavy"]
    assert e.status()["user_month_totals"] == "kept"


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 40), st.integers(1, 3000),
                          st.booleans()), min_size=1, max_size=40))
def test_user_month_totals_change_no_decision_on_any_stream(spec):
    """Random streams (several tenants and users, days across a midnight, duplicates): an
    engine keeping user month totals only when needed decides exactly as one keeping them
    always, with and without a budget per user and month."""
    events, sent = [], []
    for n, (user, tenant, minute, tokens, again) in enumerate(spec):
        ev = sent[-1] if again and sent else event(user_id=f"u{user}", tenant_id=f"t{tenant}", input_tokens=tokens,
                                                    ts=NOW_MS + minute * 3_600_000 // 4)
        sent.append(ev)
        events.append(ev)
    for policies in (OTHERS, USER_MONTH):
        auto, always = engine(policies), engine(policies, config=ALWAYS)
        assert feed(auto, events) == feed(always, events)
        assert {k: v for k, v in always.stores["aggregates"].data.items()
                if k not in user_months(always) or auto.agg.user_months} == auto.stores["aggregates"].data


def test_a_restart_without_the_budget_deletes_the_user_month_totals_it_no_longer_updates():
    before = engine(USER_MONTH)
    feed(before, [event(user_id=f"u{i}", ts=NOW_MS + i) for i in range(3)])
    after = engine(OTHERS)
    after.restore(stores(before))
    assert user_months(after) == []
    tombstones = [k for k, v, _ in after.drain().changes["aggregates"] if v is None]
    assert sorted(tombstones) == user_months(before)  # deleted in the changelog too, not only in memory
    # a budget per user and month added later finds no stale total, and is told the month began mid-way
    again = engine(USER_MONTH)
    again.restore(stores(after))
    assert again.user_months_partial == month_of(NOW_MS)


def test_user_month_totals_that_begin_mid_month_are_reported_and_complete_ones_are_not():
    without = engine(OTHERS)
    feed(without, [event(user_id="u1", ts=NOW_MS)])
    added = engine(USER_MONTH)
    added.restore(stores(without))
    assert added.user_months_partial == month_of(NOW_MS)
    assert added.status()["user_month_totals"] == "partial this month"
    feed(added, [event(user_id="u2", ts=NOW_MS + 1_000)])  # now the month has user month totals
    again = engine(USER_MONTH)
    again.restore(stores(added))  # a later restart in the same month still knows
    assert again.user_months_partial == month_of(NOW_MS)
    # totals that began mid-way through an earlier month are whole from the next one on
    earlier = NOW_MS - 40 * DAY_MS
    before = engine(OTHERS)
    feed(before, [event(user_id="u1", ts=earlier)])
    began = engine(USER_MONTH)
    began.restore(stores(before))
    assert began.user_months_partial == month_of(earlier) != month_of(NOW_MS)
    feed(began, [event(user_id="u2", ts=NOW_MS)])
    assert began.status()["user_month_totals"] == "kept"
    next_month = engine(USER_MONTH)
    next_month.restore(stores(began))
    assert next_month.user_months_partial is None
    assert not [k for k in next_month.stores["decisions"].data if k.startswith("um|")]  # the old month's fact dropped
    kept = engine(USER_MONTH)
    feed(kept, [event(user_id="u1", ts=NOW_MS)])
    restarted = engine(USER_MONTH)
    restarted.restore(stores(kept))
    assert restarted.user_months_partial is None
    fresh = engine(USER_MONTH)
    fresh.restore({})
    assert fresh.user_months_partial is None
    # user days of an earlier month only: this month's totals start complete
    old = engine(OTHERS)
    feed(old, [event(user_id="u1", ts=NOW_MS - 40 * DAY_MS)])
    later = engine(USER_MONTH)
    later.restore(stores(old))
    assert later.agg.user_months_begin_mid_month(NOW_MS) == set()
    assert later.agg.user_months_begin_mid_month(NOW_MS - 40 * DAY_MS) == {0}  # that month's began mid-way
