"""Keep one effective control per scope: deciding, not emitting.

Several rules may restrict the same scope at once (a daily and a monthly budget on one
tenant, say). The compacted control topic holds one message per scope, so the board keeps
every rule's contribution and emits a ControlEvent (into the batch's ``Emitted``) only when
the *effective* decision (the strongest: block > throttle > downgrade > allow; an operator's
``allow`` overrides the rules until its deadline) changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tokenbrake.schemas.control import ACTION_RANK, ControlEvent, Reason, Scope
from tokenbrake.streams.emit.events import Emitted, stable_id, ts_of


@dataclass(frozen=True, slots=True)
class Contribution:
    """One rule's wish for a scope."""

    action: str
    reason: Reason
    policy_id: str | None = None
    to_model: str | None = None
    max_rps: float | None = None
    expires_ms: int | None = None

    @property
    def rank(self) -> int:
        return ACTION_RANK[self.action]


#: the source of an operator's control by hand; its ``allow`` (with a deadline) overrides the rules
OPERATOR = "operator"


def _strongest(wishes: dict[str, Contribution]) -> Contribution | None:
    forced = wishes.get(OPERATOR)
    if forced is not None and forced.action == "allow":
        return None
    return max(wishes.values(), key=lambda w: w.rank, default=None)


class ControlBoard:
    def __init__(self, out: Emitted) -> None:
        self.out = out
        self._wishes: dict[str, dict[str, Contribution]] = {}
        self._scopes: dict[str, Scope] = {}
        self._effective: dict[str, tuple[str, str | None, float | None]] = {}

    def put(self, scope: Scope, source: str, wish: Contribution | None, at_ms: int, emit: bool = True,
            reason: Reason | None = None) -> None:
        """Record (or with ``None`` withdraw, because of ``reason``) ``source``'s wish; emit when
        the scope's effective decision changes."""
        key = scope.key()
        wishes = self._wishes.setdefault(key, {})
        if wish is None:
            wishes.pop(source, None)
        else:
            wishes[source] = wish
        self._scopes[key] = scope
        best = _strongest(wishes)
        effective = ("allow", None, None) if best is None else (best.action, best.to_model, best.max_rps)
        if not wishes:
            del self._wishes[key]
        if self._effective.get(key, ("allow", None, None)) == effective:
            return
        self._effective[key] = effective
        if effective[0] == "allow":
            self._effective.pop(key)
        if emit:
            self.out.controls.append(self._control(scope, best, reason, at_ms))

    def _control(self, scope: Scope, best: Contribution | None, reason: Reason | None,
                 at_ms: int) -> ControlEvent:
        if best is None:
            reason = reason or Reason(rule="resolved", observed=Decimal(0), threshold=Decimal(0), period="")
            return ControlEvent(control_id=stable_id(scope.key(), "allow", at_ms), issued_at=ts_of(at_ms),
                                scope=scope, action="allow", reason=reason)
        return ControlEvent(
            control_id=stable_id(scope.key(), best.action, best.policy_id, at_ms), issued_at=ts_of(at_ms),
            scope=scope, action=best.action, max_rps=best.max_rps, downgrade_to=best.to_model,
            reason=best.reason, policy_id=best.policy_id,
            expires_at=ts_of(best.expires_ms) if best.expires_ms else None)

    def effective(self, key: str) -> tuple[str, str | None, float | None]:
        """(action, downgrade_to, max_rps) in force on the scope key."""
        return self._effective.get(key, ("allow", None, None))

    def reissue(self, scope: Scope, at_ms: int) -> None:
        """Emit the scope's effective decision again (the topic's latest message differs)."""
        best = _strongest(self._wishes.get(scope.key(), {}))
        self.out.controls.append(self._control(scope, best, None, at_ms))

    def active(self) -> dict[str, tuple[str, str | None, float | None]]:
        """Effective non-allow decision per scope key."""
        return dict(self._effective)

    def clear(self) -> None:
        self._wishes.clear()
        self._scopes.clear()
        self._effective.clear()
