"""An operator's control holds against automatic transitions on the same scope, until it
expires or the operator lifts it; the topic's latest message always matches the decision."""

from datetime import UTC, datetime

from tests.helpers import NOW_MS, engine, event
from tests.unit.test_budgets import POLICY, run
from tokenbrake.streams.aggregate.periods import DAY_MS
from tokenbrake.streams.operator import build_control


def _by_hand(action: str, expires_ms: int | None = None, **kw):
    control = build_control(action, "acme", None, None, None, kw.get("max_rps"), kw.get("to_model"), None, "on-call")
    if expires_ms is None:
        return control
    return control.model_copy(update={"expires_at": datetime.fromtimestamp(expires_ms / 1000, UTC)})


def _actions(e) -> list[str]:
    return [c.action for c in e.drain().controls]


def test_a_block_by_hand_outlives_budget_transitions_and_rollover():
    e = engine(POLICY)
    e.operator_control(_by_hand("block"))
    assert _actions(e) == []  # the operator already published it
    assert [c.action for c in run(e, 25).controls] == []  # downgrade, then block: weaker or equal, silent
    e.watermark = NOW_MS + DAY_MS
    e.tick()  # the budget's period rolls over: its allow must not lift the operator's block
    assert _actions(e) == []
    assert [c["action"] for c in e.status()["controls"]] == ["block"]
    e.operator_control(_by_hand("allow"))  # lifted by hand, nothing else wants a control
    assert _actions(e) == [] and e.status()["controls"] == []


def test_a_weaker_control_by_hand_is_corrected_and_lifting_it_restores_the_budget():
    e = engine(POLICY)
    assert [c.action for c in run(e, 25).controls] == ["downgrade", "block"]
    e.operator_control(_by_hand("throttle", max_rps=5))
    assert _actions(e) == ["block"]  # the topic's latest said throttle: the budget's block is published again
    e.operator_control(_by_hand("allow"))
    assert _actions(e) == ["block"]  # the operator's allow would have lifted the budget's block


def test_an_expired_control_by_hand_hands_back_to_the_rules():
    e = engine(POLICY)
    assert [c.action for c in run(e, 12).controls] == ["downgrade"]
    e.operator_control(_by_hand("block", expires_ms=NOW_MS + 60_000))  # stronger: nothing to correct
    assert _actions(e) == []
    e.watermark = NOW_MS + 120_000
    e.tick()
    assert _actions(e) == ["downgrade"]  # an expired block reads as allow: the downgrade is published


def test_a_control_by_hand_survives_a_restart():
    e = engine(POLICY)
    e.operator_control(_by_hand("block"))
    store = e.stores["decisions"]
    restored = engine(POLICY)
    restored.restore({"decisions": [(k, v, store.partition_of(k)) for k, v in store.items()]})
    assert [c["action"] for c in restored.status()["controls"]] == ["block"]
    restored.process(event(ts=NOW_MS), 0, 1)
    assert _actions(restored) == []


def test_an_allow_by_hand_with_a_deadline_overrides_the_rules_until_then():
    e = engine(POLICY)
    assert [c.action for c in run(e, 25).controls] == ["downgrade", "block"]
    e.operator_control(_by_hand("allow", expires_ms=NOW_MS + 60_000))  # unblock a VIP for a minute
    assert _actions(e) == [] and e.status()["controls"] == []
    run(e, 5)  # the budget still wants its block: held back
    assert e.status()["controls"] == []
    e.watermark = NOW_MS + 120_000
    e.tick()
    assert _actions(e) == ["block"]  # the override expired: the budget's block is back



def test_a_tombstone_on_a_controlled_scope_gets_its_control_again():
    """Issue 11 (6.): a null record on the compacted control topic deletes a scope's last
    control; the worker owning the tenant publishes the effective decision again (never for a
    scope it does not own, nor for a key that never held a control)."""
    from tests.helpers import NOW_MS, engine, event
    from tokenbrake.clients.killswitch import KillSwitch
    from tokenbrake.streams.emit.reassert import Reasserter

    e = engine("""
budgets:
  - id: tiny
    scope: {tenant: "*"}
    period: day
    limit_usd: "0.001"
    action: {action: block}
""", clock=lambda: NOW_MS)
    e.process(event(tenant_id="acme"), 0, 1)
    assert [c.action for c in e.drain().controls] == ["block"]
    key = "tenant=acme/feature=*/user=*/model=*"
    view = KillSwitch("127.0.0.1:1", "control", keys={})  # fed by hand: never started
    reasserter = Reasserter(holds=lambda k: k == key)
    view.on_ignored.append(reasserter.on_ignored)
    for written_under in (key, "tenant=globex/feature=*/user=*/model=*"):
        view.apply(None, written_under.encode())
    assert view.ignored["tombstone"] == 2
    assert reasserter.take(owns=lambda tenant: False) == []  # another worker's tenant
    view.apply(None, key.encode())
    scopes = reasserter.take(owns=lambda tenant: tenant == "acme")
    for scope in scopes:
        e.reassert(scope)
    assert [(c.action, c.scope.key()) for c in e.drain().controls] == [("block", key)]
