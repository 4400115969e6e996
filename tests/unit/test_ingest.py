import pytest

from tests.helpers import NOW_MS, engine, event
from tokenbrake.schemas.codec import dumps
from tokenbrake.streams.decide.policies import PolicyError, parse_policies
from tokenbrake.streams.ingest.decode import decode
from tokenbrake.streams.ingest.dedupe import Seen


def _raw(**kw):
    return dumps(event(**kw).model_dump(mode="json", exclude_none=True))


def test_single_and_array():
    good, bad = decode(_raw())
    assert len(good) == 1 and not bad
    good, bad = decode(b"[" + _raw() + b"," + _raw() + b"]")
    assert len(good) == 2 and not bad


def test_bad_element_does_not_lose_the_good_ones():
    good, bad = decode(b"[" + _raw() + b',{"event_id":"x"},' + _raw() + b"]")
    assert len(good) == 2
    assert bad[0].reason == "invalid_event" and b'"x"' in bad[0].payload and "element 1" in bad[0].error


@pytest.mark.parametrize("value,reason", [(b"", "empty"), (b"{oops", "not_json"), (b"[]", "empty"),
                                          (b'"a string"', "invalid_event"), (b"42", "invalid_event")])
def test_rejections_keep_original_bytes(value, reason):
    good, bad = decode(value)
    assert not good and bad[0].reason == reason and bad[0].payload == value


def test_dedupe_classifies():
    e = engine()
    ev = event()
    assert e.process(ev, 0, 5).fresh
    assert e.process(ev, 0, 5).fresh is False  # same message again: a redelivery
    assert e.process(ev, 1, 9) is Seen.DUPLICATE


def test_dedupe_remembers_where_each_id_was_read_across_a_restart():
    from tokenbrake.streams.ingest.dedupe import Deduper
    from tokenbrake.streams.state.store import Store

    first = Deduper(Store("dedupe"), 60, 1000)
    assert first.check("a", NOW_MS, 3, 70_000_000_000) is Seen.NEW  # a large offset, a high partition
    assert first.check("b", NOW_MS + 60_000, 0, 0) is Seen.NEW
    assert first.check("c", NOW_MS, 1, -1) is Seen.NEW  # no offset (a backtest)
    first.seal()
    restarted = Deduper(Store("dedupe"), 60, 1000)
    old_format = ("old:1:1", [["z", NOW_MS // 60_000, 12]], 1)  # a chunk as earlier versions wrote it
    restarted.store.load([*first.store.changes(), old_format])
    restarted.rebuild_index()
    # an old chunk's offset reads as the position of its message's first element
    assert restarted.check("z", NOW_MS, 1, 12 << 20) is Seen.REDELIVERY and len(restarted) == 4
    for d in (first, restarted):
        assert d.check("a", NOW_MS, 3, 70_000_000_000) is Seen.REDELIVERY
        assert d.check("a", NOW_MS, 2, 70_000_000_000) is Seen.DUPLICATE  # same offset, other partition
        assert d.check("a", NOW_MS, 3, 70_000_000_001) is Seen.DUPLICATE
        assert d.check("b", NOW_MS, 0, 0) is Seen.REDELIVERY
        assert d.check("c", NOW_MS, 1, -1) is Seen.DUPLICATE  # without an offset nothing is a redelivery
        assert len(d) == (3 if d is first else 4) and d.watermark_minute == NOW_MS // 60_000 + 1


def test_dedupe_memory_is_bounded_and_late_events_are_refused():
    from tokenbrake.streams.engine import EngineConfig

    e = engine(config=EngineConfig(dedupe_horizon_minutes=60, dedupe_max_entries=1000))
    for i in range(3000):
        e.process(event(ts=NOW_MS + i * 1000), 0, i)
    assert len(e.dedupe) <= 1000 and len(e.stores["dedupe"]) <= 1000
    assert e.process(event(ts=NOW_MS), 0, 99_999) is Seen.LATE


def test_expired_buckets_are_dropped():
    e = engine()
    for i in range(200):
        e.process(event(ts=NOW_MS + i * 60_000, user_id=f"u{i}"), 0, i)
    e.watermark = NOW_MS + 3 * 86_400_000
    e.tick()
    assert not any(k.startswith(("m", "d")) for k, _ in e.stores["aggregates"].items())


def test_day_and_month_buckets_live_until_yesterday_and_last_month_also_after_a_restore():
    from tokenbrake.streams.aggregate.periods import DAY_MS, day_of, month_of

    for restored in (False, True):
        e = engine()
        start = NOW_MS - 70 * DAY_MS
        day0 = day_of(start)
        for d in range(70):  # one event a day for 70 days, as the watermark moves
            e.process(event(ts=start + d * DAY_MS, user_id=f"u{d}"), 0, d)
        if restored:  # indexes rebuilt from the persisted keys alone
            e.restore({"aggregates": [(k, v, 0) for k, v in e.stores["aggregates"].items()]})
        now = start + 69 * DAY_MS
        e.agg.expire(now)
        keys = [k for k, _ in e.stores["aggregates"].items()]
        days = {int(k[1:k.index("|")]) for k in keys if k[0] == "d"}
        months = {int(k[1:k.index("|")]) for k in keys if k[0] == "M"}
        assert days == {day0 + 68, day0 + 69}
        assert months == {month_of(now) - 1, month_of(now)}
        assert {int(k[1:k.index("|")]) for k in keys if k[0] == "m"} == {now // 60_000}  # the last event's


def test_policy_errors_name_line_and_field():
    with pytest.raises(PolicyError) as err:
        parse_policies("budgets:\n  - id: a\n    period: day\n    limit_usd: 5.5\n", "p.yaml")
    assert "p.yaml:4: budgets.0.limit_usd" in str(err.value)
    with pytest.raises(PolicyError, match="budgets.0.limit_usd"):  # would not fit ClickHouse's Decimal(18, 9)
        parse_policies('budgets:\n  - {id: a, period: day, limit_usd: "1000000000"}\n', "p.yaml")


def test_dedupe_chunks_stay_small_whatever_the_batch():
    from tokenbrake.streams.ingest.dedupe import CHUNK_MAX, chunk_entries

    e = engine()
    for i in range(CHUNK_MAX * 2 + 10):
        e.process(event(ts=NOW_MS + i), 0, i)
    e.drain()  # one batch: sealed into bounded chunks
    sizes = [len(list(chunk_entries(v))) for _, v in e.stores["dedupe"].items()]
    assert sum(sizes) == CHUNK_MAX * 2 + 10 and max(sizes) <= CHUNK_MAX


def test_unknown_fields_are_accepted_counted_and_named_once(caplog):
    from tokenbrake.schemas.codec import dumps as _dumps
    from tokenbrake.streams.ingest.decode import note_unknown_fields

    base = {"event_id": "e1", "ts": 1_767_571_200_000, "tenant_id": "acme", "feature_id": "chat", "user_id": "u1",
            "provider": "openai", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 1}
    newer = {**base, "region_v2": "eu-west", "routing": {"tier": "gold"}}  # a producer ahead of the worker
    good, bad = decode(_dumps([newer, {**newer, "event_id": "e2"}, base | {"event_id": "e3"}]))
    assert bad == [] and [e.event_id for e in good] == ["e1", "e2", "e3"]
    assert good[0].model_dump(exclude=set(good[0].model_extra)) == good[2].model_dump() | {"event_id": "e1"}
    counts: dict[str, int] = {}
    with caplog.at_level("WARNING", logger="tokenbrake.ingest"):
        note_unknown_fields(good, counts)
    assert counts == {"unknown_fields": 2}
    assert len(caplog.records) == 1 and caplog.records[0].fields == ["region_v2", "routing"]
