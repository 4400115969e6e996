"""The backtest streams: events are read and decided one at a time, and what it holds is
bounded by scopes and the event rate, not by the number of events (issue 13)."""

import itertools
from datetime import UTC, datetime

from tests.helpers import NOW_MS, engine, event
from tokenbrake.schemas.codec import dumps
from tokenbrake.streams.backtest import counted, in_time_order, read_events, run

T0 = NOW_MS // 60_000 * 60_000 - 10 * 86_400_000


def _at(ms):
    return event(ts=datetime.fromtimestamp(ms / 1000, UTC))


def test_reorder_buffer_sorts_stragglers_and_holds_only_its_window():
    pulled = []

    def source():
        for i in range(10_000):
            pulled.append(i)
            yield _at(T0 + i * 1000 - (7_000 if i % 10 == 0 else 0))  # every 10th event 7 s late

    out = []
    for ev in in_time_order(source(), reorder_ms=60_000):
        out.append(int(ev.ts.timestamp() * 1000))
        assert len(pulled) - len(out) <= 62  # a minute of events at one a second, never the file
    assert out == sorted(out) and len(out) == 10_000


def test_read_events_is_lazy_and_reports_invalid_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    good = event().model_dump(mode="json")
    path.write_bytes(b"\n".join([dumps(good), b"{not json", dumps({**good, "event_id": "e2"})]) + b"\n")
    errors = []
    stream = read_events(path, lambda line, msg: errors.append(line))
    first = next(stream)
    assert first.event_id == good["event_id"] and errors == []  # nothing past the first line read yet
    assert [e.event_id for e in stream] == ["e2"] and errors == [2]


def _day_of_traffic(day):
    for minute in range(1440):
        for k, tenant in enumerate(("acme", "globex")):
            ts = T0 + day * 86_400_000 + minute * 60_000 + k * 1000
            yield event(ts=datetime.fromtimestamp(ts / 1000, UTC), tenant_id=tenant, event_id=f"d{day}m{minute}{k}",
                        user_id=f"u{minute % 50}")


def _state_size(e):
    hub = e.detectors
    return (len(hub.models), sum(len(b) for r in hub._open.values() for b in r.values()),
            sum(len(s) for name, s in e.stores.items() if name != "dedupe"))


def test_changelog_records_are_not_kept_by_the_backtest():
    e = engine()
    for _ in run(e, itertools.chain.from_iterable(_day_of_traffic(d) for d in range(2))):
        pass
    assert all(store.changes() == [] for store in e.stores.values())


def test_engine_state_is_bounded_by_scopes_not_by_events():
    e = engine()
    sizes, marks = [], []
    events = itertools.chain.from_iterable(_day_of_traffic(d) for d in range(4))
    for n, _ in enumerate(run(e, counted(events, [2880 * 2, 2880 * 4], lambda n, rss: marks.append(n)))):
        pass
    sizes.append(_state_size(e))
    e2 = engine()
    for _ in run(e2, itertools.chain.from_iterable(_day_of_traffic(d) for d in range(2))):
        pass
    assert marks == [2880 * 2, 2880 * 4]
    models, open_buckets, stored = sizes[0]
    models2, open2, stored2 = _state_size(e2)
    assert models == models2 and open_buckets <= open2 + 2
    assert stored == stored2  # aggregates: per scope and period, not per event
