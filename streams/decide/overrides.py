"""Controls an operator issued by hand (``tokenbrake control ...``) hold against the automatic ones.

The control topic keeps one message per scope, so the next automatic transition on a scope
(a budget's ``allow`` at midnight, a detector resolving) would overwrite an operator's block
if it were a message alone. An operator's control is one more wish on the scope's
:class:`ControlBoard`, the strongest one wins as for every other rule, and it lasts until
its ``expires_at`` or until the operator's plain ``allow`` withdraws it. An operator's ``allow`` *with* an expiry is an
override: the scope is allowed until then, whatever the rules want. It is kept in the
decisions store (``op|<scope key>``), so a restarted worker still honours it.

An operator's message is the scope's latest on the topic; when the scope's effective decision
differs from it (say a throttle by hand while a budget blocks), the effective decision is
published again, and likewise when an operator's control expires while rules still want one.
"""

from __future__ import annotations

from collections.abc import Callable

from tokenbrake.schemas.control import ControlEvent
from tokenbrake.streams.decide.board import OPERATOR as SOURCE
from tokenbrake.streams.decide.board import Contribution, ControlBoard
from tokenbrake.streams.state.keys import OPERATOR, operator_key
from tokenbrake.streams.state.records import OperatorControl
from tokenbrake.streams.state.store import Store


class OperatorOverrides:
    def __init__(self, board: ControlBoard, store: Store, tenant_partition: Callable[[str], int]) -> None:
        self.board, self.store, self.tenant_partition = board, store, tenant_partition
        self._expiry: dict[str, tuple[int, ControlEvent]] = {}  # scope key -> (expires ms, control)

    def apply(self, control: ControlEvent, now_ms: int) -> None:
        """Take an operator's control (read back from the control topic) into account."""
        scope, key = control.scope, control.scope.key()
        expires_ms = _expires_ms(control)
        lift = control.action == "allow" and expires_ms is None  # a plain allow lifts the operator's control
        if lift or (expires_ms is not None and expires_ms <= now_ms):
            self.store.delete(operator_key(key))
            self._expiry.pop(key, None)
            self.board.put(scope, SOURCE, None, now_ms, emit=False)
        else:
            self.store.set(operator_key(key), OperatorControl.dump(control.model_dump(mode="json")),
                           self.tenant_partition(scope.tenant_id))
            self._wish(control, expires_ms)
        if self.board.effective(key) != (control.action, control.downgrade_to, control.max_rps):
            self.board.reissue(scope, now_ms)  # the topic's latest says otherwise: correct it

    def _wish(self, control: ControlEvent, expires_ms: int | None) -> None:
        self.board.put(control.scope, SOURCE, Contribution(control.action, control.reason, None, control.downgrade_to,
                                                           control.max_rps, expires_ms), 0, emit=False)
        if expires_ms is not None:
            self._expiry[control.scope.key()] = (expires_ms, control)

    def expire(self, now_ms: int) -> None:
        for key, (expires_ms, control) in list(self._expiry.items()):
            if expires_ms <= now_ms:
                del self._expiry[key]
                self.store.delete(operator_key(key))
                self.board.put(control.scope, SOURCE, None, now_ms, emit=False)
                if self.board.effective(key)[0] != "allow":
                    self.board.reissue(control.scope, now_ms)  # an expired control reads as allow

    def restore(self) -> None:
        """Re-derive the operators' wishes from the decisions store (no events emitted)."""
        self._expiry.clear()
        for key, value in self.store.items():
            if key.startswith(OPERATOR):
                control = ControlEvent.model_validate(OperatorControl.read(value))
                self._wish(control, _expires_ms(control))


def _expires_ms(control: ControlEvent) -> int | None:
    return int(control.expires_at.timestamp() * 1000) if control.expires_at else None
