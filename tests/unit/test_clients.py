import time
from datetime import UTC, datetime, timedelta

from tokenbrake.clients import (
    KillSwitch,
    TokenBucket,
    UsageReporter,
    from_anthropic_usage,
    from_openai_usage,
    hash_user,
)
from tokenbrake.schemas.codec import dumps
from tokenbrake.schemas.control import ControlEvent, Reason, Scope
from tokenbrake.schemas.signing import sign

KEYS = "k1:secret"


def control(action="block", expires=None, **scope):
    c = ControlEvent(control_id=f"c-{time.time_ns()}", issued_at=datetime.now(UTC),
                     scope=Scope(tenant_id=scope.pop("tenant_id", "acme"), **scope), action=action,
                     max_rps=5.0 if action == "throttle" else None,
                     downgrade_to="gpt-4o-mini" if action == "downgrade" else None,
                     reason=Reason(rule="budget", observed="2", threshold="1", period="day"), expires_at=expires)
    return dumps(sign(c, "k1", b"secret"))


def loaded_switch(**kw):
    ks = KillSwitch("unused:9092", keys=KEYS, **kw)
    ks._loaded, ks._last_contact = True, time.monotonic()
    return ks


def test_most_specific_scope_wins_and_allow_clears():
    ks = loaded_switch()
    ks.apply(control("downgrade"))
    ks.apply(control("block", feature_id="chat"))
    ks.apply(control("throttle", feature_id="chat", user_id="u1"))
    assert ks.decide("acme").action == "downgrade"
    assert ks.decide("acme", "chat").action == "block"
    assert ks.decide("acme", "chat", user_hash="u1").action == "throttle"
    assert ks.decide("acme", "search", user_hash="u2").action == "downgrade"
    assert ks.decide("globex", "chat").action == "allow"
    ks.apply(control("allow", feature_id="chat"))
    assert ks.decide("acme", "chat").action == "downgrade"
    assert ks.decide("acme", "chat").model("gpt-4o") == "gpt-4o-mini"


def test_an_allow_with_a_deadline_is_listed_as_an_override_until_it_expires():
    ks = loaded_switch()
    ks.apply(control("block"))
    ks.apply(control("allow", expires=datetime.now(UTC) + timedelta(hours=1)))  # control allow --ttl 1h
    assert ks.decide("acme").action == "allow" and ks.controls() == {}
    assert list(ks.overrides()) == ["tenant=acme/feature=*/user=*/model=*"]
    ks.apply(control("allow", expires=datetime.now(UTC) - timedelta(seconds=1)))
    assert ks.overrides() == {}  # past its deadline
    ks.apply(control("allow", expires=datetime.now(UTC) + timedelta(hours=1)))
    ks.apply(control("downgrade"))  # a later control on the scope replaces it
    assert ks.overrides() == {} and ks.decide("acme").action == "downgrade"
    ks.apply(control("allow", expires=datetime.now(UTC) + timedelta(hours=1)))
    ks.apply(control("allow"))  # a plain allow lifts it
    assert ks.overrides() == {} and ks.controls() == {}


def test_expired_control_no_longer_applies():
    ks = loaded_switch()
    ks.apply(control("block", expires=datetime.now(UTC) - timedelta(seconds=1)))
    assert ks.decide("acme").action == "allow"


def test_unsigned_or_forged_controls_are_ignored_and_counted():
    ks = loaded_switch()
    forged = ControlEvent.model_validate_json(control("block"))
    assert not ks.apply(dumps(forged.model_copy(update={"signature": "00" * 32})))
    assert not ks.apply(dumps(forged.model_copy(update={"signature": None, "key_id": None})))
    assert not ks.apply(b"not json")
    assert ks.rejected == 3 and ks.decide("acme").action == "allow"


def test_stale_view_fails_open_or_closed():
    assert KillSwitch("x:1", keys=KEYS).decide("acme").action == "allow"
    closed = KillSwitch("x:1", keys=KEYS, fail_closed=True)
    assert closed.decide("acme").action == "block" and "stale" in closed.decide("acme").reason
    ks = loaded_switch(max_staleness_s=0.01)
    time.sleep(0.02)
    assert ks.staleness_s > 0.01 and "failing open" in ks.decide("acme").reason


def test_throttle_decision_carries_a_token_bucket():
    ks = loaded_switch()
    ks.apply(control("throttle"))
    decision = ks.decide("acme")
    admitted = sum(decision.admit() for _ in range(50))
    assert decision.max_rps == 5.0 and 5 <= admitted <= 6
    bucket = TokenBucket(1000)
    assert all(bucket.admit() for _ in range(100))


def test_sdk_usage_helpers():
    openai = {"prompt_tokens": 1000, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 400},
              "completion_tokens_details": {"reasoning_tokens": 200}}
    assert from_openai_usage(openai) == {"input_tokens": 1000, "output_tokens": 300, "cached_input_tokens": 400,
                                         "reasoning_tokens": 200}
    responses = {"input_tokens": 50, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 10}}
    assert from_openai_usage(responses)["cached_input_tokens"] == 10

    class AnthropicUsage:  # attribute access, like the SDK's objects
        input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens = 100, 20, 1000, 50

    assert from_anthropic_usage(AnthropicUsage()) == {"input_tokens": 1150, "output_tokens": 20,
                                                      "cached_input_tokens": 1000, "cache_write_tokens": 50}


def test_reporter_hashes_users_drops_when_full_and_never_raises():
    reporter = UsageReporter("unused:9092", user_id_salt="salt", max_buffer=2)
    ok = {"tenant_id": "acme", "feature_id": "chat", "provider": "openai", "model": "gpt-4o",
          "input_tokens": 10, "output_tokens": 1}
    assert reporter.record(user_id="alice@example.com", **ok)
    assert reporter.record(user_id="bob", **ok)
    assert not reporter.record(user_id="carol", **ok) and reporter.dropped == 1
    assert not reporter.record(user_id="x", **{**ok, "input_tokens": -5}) and reporter.invalid == 1
    assert not reporter.record(user_id="x", **ok, bogus_field=1) and reporter.invalid == 2
    queued = list(reporter._buffer)
    assert queued[0].user_id == hash_user("alice@example.com", b"salt") != "alice@example.com"
    assert all("alice" not in e.model_dump_json() for e in queued)


def test_clients_never_import_faust():
    import subprocess
    import sys

    code = ("import tokenbrake.clients, examples.service, sys; "
            "assert not any(m.split('.')[0] == 'faust' for m in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def test_record_never_raises_and_counts_what_it_refuses():
    reporter = UsageReporter("unused:9092", user_id_salt="salt")
    ok = {"tenant_id": "acme", "feature_id": "chat", "provider": "openai", "model": "gpt-4o",
          "input_tokens": 10, "output_tokens": 1}

    class Weird:  # str() and hashing of it blow up
        def __str__(self) -> str:
            raise RuntimeError("boom")

    bad_users = [42, None, b"alice", 3.5, ["a"], Weird()]
    for user in bad_users:
        assert reporter.record(user_id=user, **ok) is False
    assert reporter.record(**ok) is False  # no user at all
    assert reporter.record(user_id="u", **{**ok, "tenant_id": None}) is False
    assert reporter.record(user_id="u", **{**ok, "ts": 10**30}) is False
    assert reporter.record(user_id="u", **{**ok, "input_tokens": "many"}) is False
    assert reporter.record() is False
    assert reporter.invalid == len(bad_users) + 5 and not reporter._buffer
    assert reporter.invalid_fields["user_id"] == len(bad_users) + 2
    assert reporter.invalid_fields["tenant_id"] == 1 and reporter.invalid_fields["input_tokens"] == 1
    assert reporter.record_event("not an event") is False and reporter.invalid_fields["event"] == 1


def test_the_reporter_rejects_a_misspelled_field():
    from tokenbrake.clients.reporter import UsageReporter

    reporter = UsageReporter("127.0.0.1:1", user_id_salt="s")
    assert reporter.record(tenant_id="acme", feature_id="chat", user_id="u", provider="openai", model="gpt-4o",
                           input_tokens=10, output_tokens=1, cached_tokens=4) is False
    assert reporter.invalid == 1
