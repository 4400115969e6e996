"""Replay-proof controls: what a KillSwitch accepts from the control topic (see clients.control_gate)."""

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenbrake.clients import KillSwitch, hash_user
from tokenbrake.clients.control_gate import Ignored
from tokenbrake.schemas.codec import dumps, loads
from tokenbrake.schemas.control import ControlEvent, Reason, Scope, parse_scope_key
from tokenbrake.schemas.sequence import ControlSigner, next_seq, order_key
from tokenbrake.schemas.signing import sign, verify

T0 = 1_800_000_000_000  # ms; every clock here is injected
KEYS = {"k1": b"secret-1", "k2": b"secret-2"}
ACME = "tenant=acme/feature=*/user=*/model=*"


class Clock:
    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def switch(clock: Clock, **kw) -> KillSwitch:
    ks = KillSwitch("unused:9092", keys=kw.pop("keys", KEYS), wall_clock_ms=clock, **kw)
    ks._loaded = True
    ks._last_contact = float("inf")  # never stale: staleness is not what these tests are about
    return ks


def control(action: str = "block", at_ms: int = T0, expires_ms: int | None = None, cid: str | None = None,
            **scope: str) -> ControlEvent:
    return ControlEvent(
        control_id=cid or f"{action}-{at_ms}", issued_at=datetime.fromtimestamp(at_ms / 1000, UTC),
        scope=Scope(tenant_id=scope.pop("tenant_id", "acme"), **scope), action=action,
        reason=Reason(rule="operator", observed=0, threshold=0, period="day"),
        expires_at=datetime.fromtimestamp(expires_ms / 1000, UTC) if expires_ms else None)


def issue(clock: Clock, ks: KillSwitch, c: ControlEvent, key_id: str = "k1") -> bytes:
    """What an issuer publishes: the next sequence after what the view has read, signed."""
    return dumps(ControlSigner(key_id, KEYS.get(key_id, b"other"), clock=clock, last_seen=ks.last_seq).issue(c))


def test_an_old_block_replayed_after_the_allow_changes_nothing():
    clock = Clock()
    ks = switch(clock)
    old_block = issue(clock, ks, control("block"))
    assert ks.apply(old_block) and ks.decide("acme").blocked
    clock.ms += 60_000
    assert ks.apply(issue(clock, ks, control("allow", clock.ms)))
    clock.ms += 60_000
    assert not ks.apply(old_block)  # re-published by whoever saw it
    assert ks.decide("acme").action == "allow" and ks.ignored[Ignored.STALE] == 1


def test_an_old_allow_replayed_over_an_active_block_changes_nothing():
    clock = Clock()
    ks = switch(clock)
    old_allow = issue(clock, ks, control("allow"))
    ks.apply(old_allow)
    clock.ms += 1_000
    ks.apply(issue(clock, ks, control("block", clock.ms)))
    for _ in range(3):
        assert not ks.apply(old_allow)
    assert ks.decide("acme").blocked and ks.ignored[Ignored.STALE] == 3


def test_the_same_record_twice_is_applied_once():
    clock = Clock()
    ks = switch(clock)
    record = issue(clock, ks, control("block"))
    assert ks.apply(record) and not ks.apply(record) and ks.applied == 1


def test_a_control_stops_applying_at_its_expiry_and_an_expired_one_never_applies():
    clock = Clock()
    ks = switch(clock)
    record = issue(clock, ks, control("block", expires_ms=T0 + 60_000))
    assert ks.apply(record)
    clock.ms = T0 + 59_999
    assert ks.decide("acme").blocked
    clock.ms = T0 + 60_000
    assert ks.decide("acme").action == "allow" and ks.controls() == {}
    fresh = switch(clock)  # a service starting later reads the expired record: it never applies
    assert not fresh.apply(record) and fresh.ignored[Ignored.EXPIRED] == 1
    assert fresh.decide("acme").action == "allow"
    # ... and it stays the scope's latest word: older records remain refused
    assert not fresh.apply(dumps(sign(control("block", T0 - 5_000).model_copy(update={"seq": T0 - 5_000}),
                                      "k1", KEYS["k1"])))
    assert fresh.ignored[Ignored.STALE] == 1 and fresh.decide("acme").action == "allow"


def test_an_expired_latest_record_clears_the_scope():
    clock = Clock()
    ks = switch(clock)
    ks.apply(issue(clock, ks, control("block")))
    signer = ControlSigner("k1", KEYS["k1"], clock=Clock(T0 + 1), last_seen=ks.last_seq)
    expired = signer.issue(control("throttle", T0 + 1, expires_ms=T0 + 2))
    clock.ms = T0 + 10
    assert not ks.apply(dumps(expired)) and ks.decide("acme").action == "allow"


def test_far_future_controls_are_refused_and_do_not_outrank_later_ones():
    clock = Clock()
    ks = switch(clock, max_future_skew_s=300)
    ten_years = T0 + 10 * 365 * 86_400_000
    by_date = sign(control("allow", ten_years).model_copy(update={"seq": T0}), "k1", KEYS["k1"])
    by_seq = sign(control("allow", T0).model_copy(update={"seq": ten_years}), "k1", KEYS["k1"])
    just_inside = sign(control("block", T0 + 299_000).model_copy(update={"seq": T0 + 299_000}), "k1", KEYS["k1"])
    assert not ks.apply(dumps(by_date)) and not ks.apply(dumps(by_seq))
    assert ks.ignored[Ignored.FUTURE] == 2 and ks.last_seq(ACME) is None
    assert ks.apply(dumps(just_inside)) and ks.decide("acme").blocked
    clock.ms += 300_000
    assert ks.apply(issue(clock, ks, control("allow", clock.ms)))
    assert ks.decide("acme").action == "allow"


def test_forged_tampered_unsigned_and_revoked_key_controls_are_ignored():
    clock = Clock()
    ks = switch(clock, keys={"k2": KEYS["k2"]})  # k1 revoked: removed from the keyring
    good = ControlSigner("k2", KEYS["k2"], clock=clock).issue(control("allow"))
    assert ks.apply(dumps(good))
    clock.ms += 1_000
    block = ControlSigner("k2", KEYS["k2"], clock=clock, last_seen=ks.last_seq).issue(control("block", clock.ms))
    attacks = [
        dumps(ControlSigner("k1", KEYS["k1"], clock=clock).issue(control("block", clock.ms, tenant_id="globex"))),
        dumps(ControlSigner("k2", b"guessed", clock=clock).issue(control("block", clock.ms))),  # forged
        dumps(block.model_copy(update={"seq": block.seq + 1})),  # tampered sequence
        dumps(block.model_copy(update={"seq": None})),  # sequence stripped
        dumps(block.model_copy(update={"scope": Scope(tenant_id="globex")})),  # tampered scope
        dumps(block.model_copy(update={"signature": None, "key_id": None})),  # unsigned
        b"{not json", b"[]",
    ]
    for record in attacks:
        assert not ks.apply(record)
    assert ks.ignored == {Ignored.BAD_SIGNATURE: 6, Ignored.UNPARSABLE: 2}
    assert ks.decide("acme").action == "allow" and ks.decide("globex").action == "allow"


def test_concurrent_issuers_are_ordered_the_same_whatever_the_arrival_order():
    clock = Clock()
    a = ControlSigner("k1", KEYS["k1"], clock=clock).issue(control("block", cid="aaa"))
    b = ControlSigner("k2", KEYS["k2"], clock=clock).issue(control("throttle", cid="bbb"))
    assert a.seq == b.seq
    decisions = set()
    for order in ((a, b), (b, a)):
        ks = switch(clock)
        for c in order:
            ks.apply(dumps(c))
        decisions.add(ks.decide("acme").action)
    assert decisions == {"throttle"}  # (seq, control_id): "bbb" wins on both


def test_sequences_survive_a_restart_and_a_clock_that_went_back():
    clock = Clock()
    ks = switch(clock)
    for _ in range(3):  # three controls within one millisecond: increasing sequences
        ks.apply(issue(clock, ks, control("block", cid=f"c{_}")))
    assert ks.last_seq(ACME) == T0 + 2
    behind = Clock(T0 - 3_600_000)  # the next issuer's clock is an hour behind
    restarted = ControlSigner("k1", KEYS["k1"], clock=behind, last_seen=ks.last_seq)  # read the topic back
    allow = restarted.issue(control("allow", behind.ms))
    assert allow.seq == T0 + 3 and ks.apply(dumps(allow)) and ks.decide("acme").action == "allow"
    assert next_seq(T0 + 10, T0 + 3) == T0 + 10


def test_issued_at_is_clamped_to_the_signers_clock():
    clock = Clock()
    ahead = control("block", T0 + 3_600_000)  # dated by a future-dated event
    signed = ControlSigner("k1", KEYS["k1"], clock=clock).issue(ahead)
    assert int(signed.issued_at.timestamp() * 1000) == T0 and verify(signed, KEYS)


def test_records_without_a_sequence_are_ordered_by_issued_at_or_refused():
    clock = Clock()
    legacy = {c: loads(dumps(sign(control(c, at), "k1", KEYS["k1"])))
              for c, at in (("block", T0 - 2_000), ("allow", T0 - 1_000))}
    for record in legacy.values():  # written before the field existed: no "seq" key at all
        record.pop("seq", None)
    assert all(verify(ControlEvent.model_validate(r), KEYS) for r in legacy.values())
    ks = switch(clock)
    assert ks.apply(dumps(legacy["allow"])) and not ks.apply(dumps(legacy["block"]))  # older: stale
    assert ks.decide("acme").action == "allow"
    assert ks.apply(issue(clock, ks, control("block")))  # a sequenced one outranks the legacy allow
    strict = switch(clock, accept_unsequenced=False)
    assert not strict.apply(dumps(legacy["block"])) and strict.ignored[Ignored.UNSEQUENCED] == 1
    assert order_key(ControlEvent.model_validate(legacy["allow"])) == (T0 - 1_000, "allow-" + str(T0 - 1_000))


def test_decide_hashes_the_raw_user_id_like_the_reporter():
    clock = Clock()
    ks = switch(clock, user_id_salt="service-salt")
    hashed = hash_user("alice@example.com", b"service-salt")
    ks.apply(issue(clock, ks, control("block", user_id=hashed)))
    assert ks.decide("acme", "chat", "alice@example.com").blocked
    assert ks.decide("acme", user="alice@example.com").blocked
    assert ks.decide("acme", user_hash=hashed).blocked  # already hashed by the caller
    assert ks.decide("acme", user="bob").action == "allow"
    custom = switch(clock, user_hasher=lambda raw: hashed if raw == "A" else raw)
    custom.apply(issue(clock, custom, control("block", user_id=hashed)))
    assert custom.decide("acme", user="A").blocked
    with pytest.raises(ValueError, match="user_id_salt"):
        switch(clock).decide("acme", user="alice@example.com")
    with pytest.raises(TypeError, match="raw user id"):
        ks.decide("acme", user=42)


def test_the_ignored_callback_sees_every_refusal():
    clock = Clock()
    ks = switch(clock)
    seen = []
    ks.on_ignored.append(lambda key, c, reason: seen.append((key, reason)))
    record = issue(clock, ks, control("block"))
    ks.apply(record, ACME.encode())
    ks.apply(record, ACME.encode())
    ks.apply(b"junk", b"tenant=globex/feature=*/user=*/model=*")
    ks.apply(b"junk")
    assert seen == [(ACME, Ignored.STALE), ("tenant=globex/feature=*/user=*/model=*", Ignored.UNPARSABLE),
                    (None, Ignored.UNPARSABLE)]


def test_the_worker_answers_a_refused_last_record_on_a_scope_it_holds_a_control_for():
    from tokenbrake.streams.emit.reassert import Reasserter

    clock = Clock()
    ks = switch(clock)
    reasserter = Reasserter(holds=lambda key: ks.last_seq(key) is not None)
    ks.on_ignored.append(reasserter.on_ignored)
    ks.on_change.append(reasserter.on_accepted)
    block = issue(clock, ks, control("block"))
    ks.apply(block, ACME.encode())
    ks.apply(b"garbage", ACME.encode())  # on a compacting topic, the last record under the key
    ks.apply(b"garbage", b"tenant=never/feature=*/user=*/model=*")  # no valid control there to hide
    ks.apply(block, b"tenant=globex/feature=*/user=*/model=*")  # an acme record replayed under another key
    everyone = lambda tenant: True  # noqa: E731
    assert [s.key() for s in reasserter.take(owns=everyone)] == [ACME]
    ks.apply(b"garbage", ACME.encode())
    clock.ms += 1
    ks.apply(issue(clock, ks, control("allow", clock.ms)), ACME.encode())  # a valid record followed it
    assert reasserter.take(owns=everyone) == []
    ks.apply(block, ACME.encode())  # stale
    assert reasserter.take(owns=lambda tenant: tenant != "acme") == []  # acme's owner answers, not us
    assert reasserter.reasserted == 1


@given(st.lists(st.one_of(st.none(), st.text(min_size=1, max_size=20).filter(lambda s: s.isprintable())),
                min_size=4, max_size=4).filter(lambda parts: parts[0] is not None))
def test_scope_keys_round_trip(parts):
    scope = Scope(tenant_id=parts[0], feature_id=parts[1], user_id=parts[2], model=parts[3])
    assert parse_scope_key(scope.key()) == scope
