"""A crash at any point neither loses nor double-counts (the pure-core half of the argument).

The worker persists each chunk's changed keys to three changelog topics (aggregates,
dedupe, decisions) and acknowledges the chunk's messages only once all of them are on the
broker. A crash can leave any prefix of each topic's records of the chunks in flight on
the broker (each topic, and each partition of it, keeps its own order; nothing orders one
topic against another), and the committed offset anywhere at or before the first chunk
that was not wholly stored. The restarted worker restores what is on the broker and reads
the messages again from the committed offset. Whatever the prefixes, the totals must equal
a clean run's.
"""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import NOW_MS, engine, event
from tokenbrake.streams.engine import STORES
from tokenbrake.streams.state.store import WIDTH

TENANTS, USERS = ("acme", "globex"), ("u1", "u2", "u3")

messages = st.lists(  # messages of 1-3 events: (tenant, user, input tokens, minute, reuse an earlier id)
    st.lists(st.tuples(st.sampled_from(TENANTS), st.sampled_from(USERS), st.integers(1, 5000),
                       st.integers(0, 90), st.booleans()), min_size=1, max_size=3),
    min_size=2, max_size=24)


def _build(spec):
    out, ids = [], []
    for m, elements in enumerate(spec):
        evs = []
        for i, (tenant, user, tokens, minute, reuse) in enumerate(elements):
            event_id = ids[tokens % len(ids)] if reuse and ids else f"m{m}e{i}"
            ids.append(event_id)  # a reused id: a producer duplicate (in the same message or another)
            evs.append(event(event_id=event_id, tenant_id=tenant, user_id=user, input_tokens=tokens,
                             ts=NOW_MS + minute * 60_000))
        out.append(evs)
    return out


def _run(e, msgs, start=0):
    for offset in range(start, len(msgs)):
        for index, ev in enumerate(msgs[offset]):
            e.process(ev, 0, offset, index)


def _counters(e, floor_minute=0):
    """Counters of the day and month buckets, and of the minute buckets at or above
    ``floor_minute`` (a restarted engine keeps no minute older than its retention behind
    the restored watermark; the sink recomputes those from usage_events)."""
    return {k: v[:WIDTH] for k, v in e.stores["aggregates"].items()
            if any(v[:WIDTH]) and (k[0] != "m" or int(k[1:k.index("|")]) >= floor_minute)}


def _persist(e, log):
    """One chunk's records per store, as the changelog would hold them (JSON copies)."""
    drained = e.drain()  # seals the dedupe chunk and takes the changes, as the worker's chunk end does
    log.append({name: [(k, None if v is None else orjson.loads(orjson.dumps(e.encoder(name)(v))), p)
                       for k, v, p in records] for name, records in drained.changes.items()})


@settings(max_examples=150, deadline=None)
@given(spec=messages, data=st.data())
def test_any_crash_point_restores_exact_totals(spec, data):
    msgs = _build(spec)
    clean = engine()
    _run(clean, msgs)

    live, log, bounds = engine(), [], [0]  # bounds: the first offset of each chunk
    cuts = sorted(data.draw(st.sets(st.integers(1, len(msgs) - 1), max_size=6), label="chunk ends"))
    for end in [*cuts, len(msgs)]:
        for offset in range(bounds[-1], end):
            for index, ev in enumerate(msgs[offset]):
                live.process(ev, 0, offset, index)
        _persist(live, log)
        bounds.append(end)
    # the crash: chunks before `whole` are on the broker; of chunk `whole`, a prefix of each
    # store's records; nothing after it. Offsets committed up to the start of a stored chunk.
    whole = data.draw(st.integers(0, len(log)), label="first chunk not wholly stored")
    survived = {name: [r for chunk in log[:whole] for r in chunk[name]] for name in STORES}
    if whole < len(log):
        for name in STORES:
            records = log[whole][name]
            survived[name] += records[:data.draw(st.integers(0, len(records)), label=f"{name} prefix")]
    committed = bounds[data.draw(st.integers(0, whole), label="committed chunk")]

    restarted = engine()
    tables = {}
    for name in STORES:
        table: dict[str, tuple] = {}
        for key, value, part in survived[name]:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = (key, value, part)
        tables[name] = list(table.values())
    restarted.restore(tables)
    _run(restarted, msgs, committed)
    floor = restarted.agg.floor_minute
    assert _counters(restarted, floor) == _counters(clean, floor)


def test_a_reread_event_is_added_only_to_the_buckets_it_missed():
    """The case the fault suite found: the dedupe record of a chunk reached the broker, its
    user-day total did not. The re-read event counts in the user's day, and nowhere else again."""
    first = engine()
    ev = event(user_id="u9")
    first.process(ev, 0, 7)
    changes = first.drain().changes
    lost = [r for r in changes["aggregates"] if "|u=" in r[0]]
    kept = [(k, orjson.loads(orjson.dumps(first.encoder("aggregates")(v))), p)
            for k, v, p in changes["aggregates"] if "|u=" not in k]
    assert lost and kept
    restarted = engine()
    restarted.restore({"aggregates": kept, "dedupe": changes["dedupe"], "decisions": []})
    assert restarted.process(ev, 0, 7).fresh is False  # its dedupe mark survived: a redelivery
    assert _counters(restarted) == _counters(first)
    restarted.process(ev, 0, 7)  # and once more: nothing changes
    assert _counters(restarted) == _counters(first)


def test_one_tenants_future_event_moves_only_its_own_clock():
    """Issue 11 (4.): a rolling-budget block of one tenant is not lifted by another tenant's
    event stamped an hour ahead; an event beyond the allowed skew is refused (Seen.FUTURE)."""
    from tokenbrake.streams.engine import EngineConfig
    from tokenbrake.streams.ingest.dedupe import Seen

    clock = [NOW_MS]
    e = engine("""
budgets:
  - id: hourly
    scope: {tenant: "*"}
    period: "rolling:1h"
    limit_usd: "0.01"
    action: {action: block}
""", clock=lambda: clock[0], config=EngineConfig(max_future_ms=3_600_000))
    for i in range(5):  # $0.0175 in the last hour: over the limit
        e.process(event(tenant_id="acme", ts=NOW_MS - 60_000 * i), 0, i)
    assert [c.action for c in e.drain().controls] == ["block"]
    e.process(event(tenant_id="globex", ts=NOW_MS + 3_480_000), 0, 10)  # 58 minutes ahead: within the skew
    assert e.now_for("globex") == NOW_MS + 3_480_000 and e.now_for("acme") == NOW_MS
    assert e.process(event(tenant_id="globex", ts=NOW_MS + 3_660_000), 0, 11) is Seen.FUTURE
    e.tick()
    assert [c.action for c in e.drain().controls] == []  # acme's block holds
    clock[0] += 3_600_000  # an hour later by the wall clock, acme's window has decayed
    e.tick()
    assert [c.action for c in e.drain().controls] == ["allow"]


def test_an_event_older_than_the_dedupe_horizon_is_late_from_the_first_event_on():
    """Found by the fault suite's hostile corpus: before the first expiry moved the dedupe floor,
    an event two days old was counted (it would reopen a day the worker no longer holds)."""
    from tokenbrake.streams.engine import EngineConfig
    from tokenbrake.streams.ingest.dedupe import Seen

    e = engine(clock=lambda: NOW_MS, config=EngineConfig(dedupe_horizon_minutes=24 * 60))
    assert e.process(event(ts=NOW_MS - 2 * 86_400_000), 0, 1) is Seen.LATE
    assert e.process(event(ts=NOW_MS - 3_600_000), 0, 2).fresh
