import pytest

from schemas.codec import dumps
from streams.decide.policies import PolicyError, parse_policies
from streams.ingest.decode import decode
from streams.ingest.dedupe import Seen
from tests.helpers import NOW_MS, engine, event


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


def test_dedupe_memory_is_bounded_and_late_events_are_refused():
    from streams.engine import EngineConfig

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


def test_policy_errors_name_line_and_field():
    with pytest.raises(PolicyError) as err:
        parse_policies("budgets:\n  - id: a\n    period: day\n    limit_usd: 5.5\n", "p.yaml")
    assert "p.yaml:4: budgets.0.limit_usd" in str(err.value)


def test_dedupe_chunks_stay_small_whatever_the_batch():
    from streams.ingest.dedupe import CHUNK_MAX

    e = engine()
    for i in range(CHUNK_MAX * 2 + 10):
        e.process(event(ts=NOW_MS + i), 0, i)
    e.drain()  # one batch: sealed into bounded chunks
    sizes = [len(v) for _, v in e.stores["dedupe"].items()]
    assert sum(sizes) == CHUNK_MAX * 2 + 10 and max(sizes) <= CHUNK_MAX
