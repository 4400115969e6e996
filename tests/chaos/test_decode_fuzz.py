"""Hypothesis fuzz of the decoder (streams/ingest/decode.py): whatever the bytes, ``decode``
returns (valid events, rejections) and never raises; every rejection has a reason, an
error and bytes; in an array, each valid element is kept and each bad one rejected on its own;
an accepted event's timestamp converts to epoch milliseconds (what the engine does next)."""

from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tokenbrake.streams.ingest.decode import decode

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _valid(i: int) -> dict:
    return {"event_id": f"fz-{i}", "ts": int(time.time() * 1000) - 60_000, "tenant_id": "t", "feature_id": "f",
            "user_id": "h:0", "provider": "openai", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5}


_scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=20), st.floats(allow_nan=True, allow_infinity=True),
    st.integers(), st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([0, -1, 10**18, 2**63, 2**64, 10**30, -(10**30), 1e30, 1e-30, "", "\x00", "a|b", "NaN"]))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=4), max_leaves=12)
_fields = st.sampled_from(sorted(_valid(0)) + ["cached_input_tokens", "reasoning_tokens", "attempt", "latency_ms",
                                                "cache_hit", "reported_cost_usd", "status", "model_version"])


def _check(value: bytes) -> tuple[list, list]:
    good, bad = decode(value)
    assert isinstance(good, list) and isinstance(bad, list)
    for rejected in bad:
        assert rejected.reason and rejected.error and isinstance(rejected.payload, bytes)
    for event in good:
        int(event.ts.timestamp() * 1000)  # the engine's first step on an accepted event
    return good, bad


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes(value):
    _check(value)


@FUZZ
@given(_json)
def test_any_json(value):
    _check(json.dumps(value, allow_nan=True).encode())


@FUZZ
@given(st.lists(st.tuples(_fields, _json), min_size=1, max_size=3))
def test_an_event_with_hostile_fields(changes):
    event = _valid(0)
    for name, value in changes:
        event[name] = value
    _check(json.dumps(event, allow_nan=True).encode())


@FUZZ
@given(st.lists(st.one_of(st.integers(0, 10**6).map(_valid),
                          st.tuples(_fields, _json).map(lambda c: {**_valid(-1), c[0]: c[1], "event_id": "bad"})),
                min_size=1, max_size=8))
def test_arrays_keep_each_valid_element_and_reject_each_bad_one(items):
    try:  # standard JSON only here: NaN or Infinity make the whole message not JSON (rejected whole)
        value = json.dumps(items, allow_nan=False).encode()
    except ValueError:
        assume(False)
    good, bad = _check(value)
    valid_ids = [i["event_id"] for i in items if i["event_id"] != "bad"]
    assert set(valid_ids) <= {e.event_id for e in good}
    assert len(good) + len(bad) == len(items)
