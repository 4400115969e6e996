"""The worker publishes a control only when it changes what the control topic says for its
scope (streams.emit.topic_latest): a crash that re-fires a level transition publishes nothing
new, and no doubt ever keeps a real change from going out."""

from __future__ import annotations

from tokenbrake.clients.control_gate import Ignored
from tokenbrake.schemas.control import ControlEvent, Reason, Scope
from tokenbrake.streams.emit.topic_latest import TopicLatest

REASON = Reason(rule="budget", observed=1, threshold=1, period="day")


def control(action: str, n: int, tenant: str = "acme", to: str | None = None) -> ControlEvent:
    return ControlEvent(control_id=f"c{n}", issued_at=1_700_000_000_000 + n, scope=Scope(tenant_id=tenant),
                        action=action, downgrade_to=to, reason=REASON)


def test_a_refired_transition_is_dropped_once_its_first_publication_is_read_back():
    latest = TopicLatest()
    block = control("block", 1)
    assert not latest.unchanged(block)
    latest.sent(block)
    latest.on_accepted(block)
    assert latest.unchanged(control("block", 2))  # the same decision after a restart
    assert not latest.unchanged(control("downgrade", 3, to="gpt-4o-mini"))
    assert not latest.unchanged(control("allow", 4))


def test_nothing_is_dropped_while_an_own_control_is_not_read_back():
    latest = TopicLatest()
    block, allow = control("block", 1), control("allow", 2)
    latest.sent(block)
    latest.on_accepted(block)
    latest.sent(allow)  # in flight
    latest.on_accepted(block)  # a stale echo order cannot make a block look published
    assert not latest.unchanged(control("block", 3))
    latest.on_accepted(allow)
    assert latest.unchanged(control("allow", 4)) and not latest.unchanged(control("block", 5))


def test_a_refused_record_or_a_tombstone_makes_the_next_control_go_out():
    for reason in (Ignored.BAD_SIGNATURE, Ignored.STALE, Ignored.TOMBSTONE):
        latest = TopicLatest()
        block = control("block", 1)
        latest.on_accepted(block)
        latest.on_ignored(block.scope.key(), None, reason)
        assert not latest.unchanged(control("block", 2)), reason
        assert not latest.unchanged(control("allow", 3)), reason
    latest = TopicLatest()
    latest.on_accepted(block)
    latest.on_ignored(None, block, Ignored.EXPIRED)  # the scope's own latest word: nothing hidden
    assert latest.unchanged(control("block", 4))


def test_an_allow_for_a_scope_never_controlled_is_already_said():
    latest = TopicLatest()
    assert latest.unchanged(control("allow", 1, tenant="quiet"))
    assert not latest.unchanged(control("block", 2, tenant="quiet"))
