"""Invariants money depends on: order does not change totals, duplicates change nothing,
remaining budget never goes negative."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import NOW_MS, engine, event
from tokenbrake.streams.aggregate.spend import COST
from tokenbrake.streams.state.store import WIDTH

calls = st.lists(st.tuples(st.sampled_from(["acme", "globex"]), st.sampled_from(["chat", "search"]),
                           st.integers(0, 50_000), st.integers(0, 5_000), st.integers(0, 3_600_000),
                           st.sampled_from(["gpt-4o", "gpt-4o-mini", "mystery"])),
                 min_size=1, max_size=40)


def _events(spec):
    return [event(event_id=f"p{i}", tenant_id=t, feature_id=f, input_tokens=inp, output_tokens=out,
                  ts=NOW_MS + dt, model=m) for i, (t, f, inp, out, dt, m) in enumerate(spec)]


def _totals(e):  # the counters, without the position of the last event added (see store.POS)
    return {k: v[:WIDTH] for k, v in e.stores["aggregates"].items() if k[0] in "dM"}


@settings(max_examples=60, deadline=None)
@given(spec=calls, seed=st.randoms(use_true_random=False))
def test_order_does_not_change_totals(spec, seed):
    events = _events(spec)
    a, b = engine(), engine()
    for i, ev in enumerate(events):
        a.process(ev, 0, i)
    shuffled = list(enumerate(events))
    seed.shuffle(shuffled)
    for i, ev in shuffled:
        b.process(ev, 0, i)
    assert _totals(a) == _totals(b)


@settings(max_examples=60, deadline=None)
@given(spec=calls, dupes=st.lists(st.integers(0, 39), max_size=20))
def test_duplicates_and_redeliveries_change_nothing(spec, dupes):
    events = _events(spec)
    a, b = engine(), engine()
    for i, ev in enumerate(events):
        a.process(ev, 0, i)
        b.process(ev, 0, i)
    for d in dupes:
        if d < len(events):
            b.process(events[d], 0, d)  # redelivery of the same message
            b.process(events[d], 1, 10_000 + d)  # the producer sent it twice
    assert _totals(a) == _totals(b)


@settings(max_examples=60, deadline=None)
@given(spec=calls, cuts=st.sets(st.integers(0, 39)), expire_at=st.sets(st.integers(0, 39)))
def test_changelog_replica_always_equals_the_state(spec, cuts, expire_at):
    """What the worker persists (each chunk's ``changes()``) rebuilds exactly the live state,
    whatever the chunking and expiry: counters updated in place must still be marked changed."""
    e = engine()
    store = e.stores["aggregates"]
    replica: dict[str, list[int]] = {}
    for i, ev in enumerate(_events(spec)):
        e.process(ev, 0, i)
        if i in expire_at:
            e.agg.expire(NOW_MS + 3_600_000 + i * 60_000 * 30)  # moves the floor, drops buckets
        if i in cuts:
            for key, value, _ in store.changes():
                if value is None:
                    replica.pop(key, None)
                else:
                    replica[key] = list(value)
    for key, value, _ in store.changes():
        if value is None:
            replica.pop(key, None)
        else:
            replica[key] = list(value)
    assert replica == {k: list(v) for k, v in store.items()}


@settings(max_examples=40, deadline=None)
@given(spec=calls)
def test_tenant_total_is_sum_of_features_and_never_negative(spec):
    e = engine()
    for i, ev in enumerate(_events(spec)):
        e.process(ev, 0, i)
    totals = _totals(e)
    for key, vec in totals.items():
        assert all(x >= 0 for x in vec)
        period, scope = key.split("|", 1)
        if "|" not in scope:
            feature_sum = sum(v[COST] for k, v in totals.items() if k.startswith(f"{period}|{scope}|f="))
            assert feature_sum == vec[COST]


@settings(max_examples=40, deadline=None)
@given(spec=calls, limit=st.integers(1, 10**9))
def test_remaining_budget_never_negative_and_exceed_fires_once(spec, limit):
    from decimal import Decimal

    usd = Decimal(limit).scaleb(-9)
    e = engine(f"""
budgets:
  - id: b
    scope: {{tenant: "*"}}
    period: month
    limit_usd: "{usd}"
    action: {{action: block}}
""")
    blocks = 0
    for i, ev in enumerate(sorted(_events(spec), key=lambda x: x.ts)):
        e.process(ev, 0, i)
        blocks += sum(c.action == "block" for c in e.drain().controls)
    over = {k for k, v in _totals(e).items() if k.startswith("M") and "|" not in k.split("|", 1)[1]
            and v[COST] >= limit}
    assert blocks == len(over)


@given(st.integers(min_value=-(10**17), max_value=10**17))
def test_money_text_for_clickhouse_is_exact(nanos):
    from decimal import Decimal

    from tokenbrake.streams.price.rates import nanos_to_text, nanos_to_usd

    text = nanos_to_text(nanos)
    assert Decimal(text) == nanos_to_usd(nanos)
    assert "E" not in text and len(text.split(".")[1]) == 9


@given(st.integers(min_value=1_420_070_400_000, max_value=4_102_444_800_000))
def test_timestamp_text_for_clickhouse_is_exact(ts_ms):
    from decimal import Decimal

    from tokenbrake.streams.sink.clickhouse import ts_text

    assert Decimal(ts_text(ts_ms)) * 1000 == ts_ms
