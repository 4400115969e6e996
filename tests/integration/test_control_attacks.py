"""The control-topic attacks of issue 11 on real parts: whoever can write to the control topic
but holds no current signing key changes no decision, neither a service's KillSwitch (live, or
started after the attacks) nor the worker, which reads operators' controls back from the topic."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from tests.integration.conftest import consume_all, produce, run
from tokenbrake.clients import KillSwitch
from tokenbrake.clients.control_gate import Ignored, expires_ms
from tokenbrake.schemas.codec import dumps
from tokenbrake.schemas.control import ControlEvent
from tokenbrake.schemas.sequence import ControlSigner, wall_clock_ms
from tokenbrake.streams.operator import build_control, publish_control
from tokenbrake.streams.settings import Settings

CURRENT, REVOKED = "k2:current-secret-16ch", "k1:revoked-secret-16ch"


def by_hand(action: str, tenant: str, ttl: str | None = None) -> ControlEvent:
    return build_control(action, tenant, None, None, None, None, None, ttl, "attack test")


def test_forged_tampered_unsigned_replayed_expired_future_and_revoked_controls_change_no_decision(
        worker_env, broker):
    worker = worker_env(control_signing_keys=CURRENT).start()
    settings = Settings(kafka_bootstrap=broker.bootstrap, topic_control=worker.topic_control,
                        control_signing_keys=CURRENT)
    topic, key_id, secret = worker.topic_control, "k2", b"current-secret-16ch"

    async def scenario() -> dict:
        live = KillSwitch(broker.bootstrap, topic, **settings.control_view_kwargs())
        await live.start()
        # the legitimate history, all signed with the current key
        two_hours_ago = wall_clock_ms() - 2 * 3_600_000
        old_ttl_block = ControlSigner(key_id, secret, clock=lambda: two_hours_ago).issue(
            by_hand("block", "acme").model_copy(update={"issued_at": datetime.fromtimestamp(two_hours_ago / 1000, UTC),
                                                        "expires_at": datetime.fromtimestamp(
                                                            (two_hours_ago + 3_600_000) / 1000, UTC)}))
        await produce(broker.bootstrap, topic, [(b"tenant=acme/feature=*/user=*/model=*", dumps(old_ttl_block))])
        acme_block = await publish_control(settings, broker.bootstrap, by_hand("block", "acme"))
        acme_allow = await publish_control(settings, broker.bootstrap, by_hand("allow", "acme"))
        initech_allow = await publish_control(settings, broker.bootstrap, by_hand("allow", "initech"))
        await publish_control(settings, broker.bootstrap, by_hand("block", "initech"))
        await wait_for(lambda: live.applied >= 4)
        # the worker reads the same topic with its own view: wait until it holds the operator's block too
        await wait_for(lambda: worker_view(worker)["controls"] == INITECH_BLOCKED)
        before = worker_view(worker)
        assert (live.decide("acme").action, live.decide("initech").action) == ("allow", "block")

        ten_years = wall_clock_ms() + 10 * 365 * 86_400_000
        broken_clock = ControlSigner(key_id, secret, clock=lambda: ten_years).issue(
            by_hand("allow", "initech").model_copy(update={"issued_at": datetime.fromtimestamp(ten_years / 1000, UTC)}))
        revoked_id, _, revoked_secret = REVOKED.partition(":")
        revoked = ControlSigner(revoked_id, revoked_secret.encode()).issue(by_hand("block", "globex"))
        forged = acme_allow.model_copy(update={"action": "block", "signature": "ab" * 32})
        tampered = acme_allow.model_copy(update={"action": "block"})
        unsigned = by_hand("block", "acme")
        attacks = {
            "replayed old block": acme_block, "replayed old allow": initech_allow,
            "re-published expired": old_ttl_block, "far future": broken_clock, "revoked key": revoked,
            "forged": forged, "tampered": tampered, "unsigned": unsigned,
            "sequence stripped": acme_block.model_copy(update={"seq": None}),
            "sequence raised": acme_block.model_copy(update={"seq": acme_block.seq + 10_000}),
        }
        await produce(broker.bootstrap, topic, [(c.scope.key().encode(), dumps(c)) for c in attacks.values()])
        await wait_for(lambda: live.rejected >= len(attacks) + 1)
        # the worker answers the refused records on the scopes it holds controls for (acme, initech)
        await wait_for(lambda: worker.status()["control_view"]["reasserted"] >= 2)
        await wait_for(lambda: live.applied >= 6)
        late = KillSwitch(broker.bootstrap, topic, **settings.control_view_kwargs())  # started after the attacks
        await late.start()
        compacted = KillSwitch(broker.bootstrap, topic, **settings.control_view_kwargs())  # sees only the last
        compacted._loaded, compacted._last_contact = True, float("inf")  # record per key, as after compaction
        last: dict[bytes, bytes] = {r.key: r.value for r in await consume_all(broker.bootstrap, topic)}
        for key, value in last.items():
            compacted.apply(value, key)
        tenants = ("acme", "initech", "globex")
        result = {
            "live": [live.decide(t).action for t in tenants], "late": [late.decide(t).action for t in tenants],
            "compacted": [compacted.decide(t).action for t in tenants],
            "live_ignored": dict(live.ignored), "late_ignored": dict(late.ignored),
            "worker_before": before, "worker_after": worker_view(worker),
        }
        await late.stop()
        await live.stop()
        return result

    result = run(scenario())
    assert result["live"] == result["late"] == result["compacted"] == ["allow", "block", "allow"]
    # both saw the whole topic: the expired record in the history (expired), then the attacks
    assert result["live_ignored"] == result["late_ignored"] == {
        Ignored.EXPIRED: 1, Ignored.STALE: 3, Ignored.FUTURE: 1, Ignored.BAD_SIGNATURE: 6}
    before, after = result["worker_before"], result["worker_after"]
    assert before["controls"] == after["controls"] == INITECH_BLOCKED
    assert after["issued"] == before["issued"] + 2  # the same decisions again, for acme and initech only
    assert after["ignored"] == {"stale": 3, "future": 1, "bad_signature": 6, "expired": 1}


INITECH_BLOCKED = [
    {"scope": "tenant=initech/feature=*/user=*/model=*", "action": "block", "downgrade_to": None, "max_rps": None}]


def worker_view(worker) -> dict:  # noqa: ANN001
    status = worker.status()
    return {"controls": status["controls"], "issued": status["worker"]["controls"],
            "ignored": status["control_view"]["ignored"]}


async def wait_for(condition, timeout_s: float = 20.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_an_expired_ttl_control_stops_applying_at_its_expiry(worker_env, broker):
    worker = worker_env(control_signing_keys=CURRENT)
    settings = Settings(kafka_bootstrap=broker.bootstrap, topic_control=worker.topic_control,
                        control_signing_keys=CURRENT)
    now = [wall_clock_ms()]

    async def scenario() -> tuple[str, str, str]:
        from tokenbrake.streams.broker import ensure_topics

        await ensure_topics(broker.bootstrap, {worker.topic_control: 1}, {worker.topic_control})
        ks = KillSwitch(broker.bootstrap, worker.topic_control, **settings.control_view_kwargs(),
                        wall_clock_ms=lambda: now[0])
        await ks.start()
        signed = await publish_control(settings, broker.bootstrap, by_hand("block", "acme", ttl="10m"))
        await wait_for(lambda: ks.applied == 1)
        during = ks.decide("acme").action
        expiry = expires_ms(signed)
        assert expiry - now[0] >= timedelta(minutes=10).total_seconds() * 1000
        now[0] = expiry - 1
        last_ms = ks.decide("acme").action
        now[0] = expiry
        after = ks.decide("acme").action
        await ks.stop()
        return during, last_ms, after

    assert run(scenario()) == ("block", "block", "allow")


def test_scope_sequences_follow_the_topic_across_issuers(worker_env, broker):
    """`tokenbrake control` reads the topic back before it signs: its sequence follows the
    highest one there, even when that one came from an issuer whose clock is ahead."""
    worker = worker_env(control_signing_keys=CURRENT)
    settings = Settings(kafka_bootstrap=broker.bootstrap, topic_control=worker.topic_control,
                        control_signing_keys=CURRENT)

    async def scenario() -> tuple[int, int]:
        from tokenbrake.streams.broker import ensure_topics

        await ensure_topics(broker.bootstrap, {worker.topic_control: 1}, {worker.topic_control})
        ahead = wall_clock_ms() + 60_000  # another issuer, a minute ahead (within the skew)
        first = ControlSigner("k2", b"current-secret-16ch", clock=lambda: ahead).issue(by_hand("block", "acme"))
        await produce(broker.bootstrap, worker.topic_control, [(first.scope.key().encode(), dumps(first))])
        second = await publish_control(settings, broker.bootstrap, by_hand("allow", "acme"))
        return first.seq, second.seq

    first, second = run(scenario())
    assert second == first + 1


