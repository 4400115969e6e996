import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.helpers import event
from tokenbrake.schemas.codec import dumps, loads
from tokenbrake.schemas.control import ControlEvent, Reason, Scope, scope_key
from tokenbrake.schemas.export import OUT, render
from tokenbrake.schemas.signing import parse_keyring, sign, verify


def test_jsonschema_files_are_current():
    for name, text in render().items():
        assert (OUT / name).read_text() == text, f"run `make schemas`: {name} is stale"


@pytest.mark.parametrize("bad", [
    {"input_tokens": -1}, {"output_tokens": 10**9}, {"tenant_id": "x" * 129}, {"tenant_id": "a\nb"},
    {"ts": int(time.time() * 1000) + 86_400_000}, {"ts": "2026-01-01T00:00:00"}, {"reported_cost_usd": 0.1},
    {"reported_cost_usd": "1000000.01"}, {"reported_cost_usd": 10**12},
    {"cached_input_tokens": 5000}, {"reasoning_tokens": 500}, {"status": "NOT OK"},
    {"tenant_id": "acme|u=bob"}, {"feature_id": "chat|x"}, {"user_id": "a|b"}, {"model": "gpt|4o"},
])
def test_nonsense_is_rejected(bad):
    with pytest.raises(ValidationError):
        event(**bad)


def test_scope_ids_cannot_collide_in_the_aggregate_keys():
    # `|` separates the parts of an aggregate key: tenant "acme|u=bob" would be user bob of acme
    with pytest.raises(ValidationError, match="tenant_id"):
        event(tenant_id="acme|u=bob")
    assert event(tenant_id="acme/eu=1", user_id="h:2c4e", model="meta-llama/Llama-3.1-8B").tenant_id == "acme/eu=1"


def test_epoch_ms_and_rfc3339_agree():
    a = event(ts=1_700_000_000_000)
    b = event(ts="2023-11-14T22:13:20Z")
    assert a.ts == b.ts


def test_roundtrip():
    e = event(reported_cost_usd="0.0123")
    assert type(e).model_validate(loads(dumps(e))) == e


def _control():
    return ControlEvent(control_id="c1", issued_at=1_700_000_000_000, scope=Scope(tenant_id="acme"),
                        action="block", reason=Reason(rule="budget", observed="1", threshold="1", period="day"))


def test_signature_verifies_and_detects_tampering():
    ring = parse_keyring("k1:secret,k2:other")
    signed = sign(_control(), "k1", ring["k1"])
    assert verify(signed, ring)
    assert not verify(signed.model_copy(update={"scope": Scope(tenant_id="victim")}), ring)
    assert not verify(_control(), ring)
    assert not verify(sign(_control(), "k1", b"forged"), ring)
    assert verify(sign(_control(), "k2", ring["k2"]), ring)  # rotation: both keys verify


_part = st.one_of(st.none(), st.sampled_from(["*", "a", "b", "a/b", "a=b", "feature=*", "%2F", "/", "="]),
                  st.text(alphabet="ab/=*%", min_size=1, max_size=6))


@settings(max_examples=300, deadline=None)
@given(x=st.tuples(st.text(alphabet="ab/=*%", min_size=1, max_size=6), _part, _part, _part),
       y=st.tuples(st.text(alphabet="ab/=*%", min_size=1, max_size=6), _part, _part, _part))
def test_distinct_scopes_never_share_a_control_key(x, y):
    """The control topic is compacted by this key and the kill switch looks controls up by it:
    two scopes sharing one would let a control for one apply to the other."""
    if x != y:
        assert scope_key(*x) != scope_key(*y)
