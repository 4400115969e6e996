"""Publish a control only when it changes what the control topic says for its scope.

After a crash the restarted worker re-derives its decisions from the persisted state and the
messages it reads again; a budget level whose record did not reach the broker fires its
transition a second time. The control it emits says what the topic already says: publishing
it again would change nothing for a kill switch, but it is one more control for the audit
trail, the pager and anyone counting controls. So the worker keeps, per scope, the decision
of the topic's latest accepted record, as its control view reads them back in topic order,
and drops a control that equals it.

Every doubt is answered by publishing: while one of the worker's own controls for the scope
is not yet read back, its place in the topic relative to others' records is unknown; a
record a view refuses (forged, replayed, a tombstone) forgets the scope's entry, so the
worker's answer to it (``streams.emit.reassert``) always goes out; a record the view has not
read yet (an operator's) is answered when it is read (``streams.decide.overrides``). The
worker decides only once its control view has read the topic to its end.

>>> from tokenbrake.schemas.control import ControlEvent, Scope
>>> block = ControlEvent(control_id="c1", issued_at="2026-01-05T00:00:00Z", action="block",
...                      scope=Scope(tenant_id="acme"), reason={"rule": "budget", "observed": "1",
...                      "threshold": "1", "period": "day"})
>>> latest = TopicLatest()
>>> latest.unchanged(block)
False
>>> latest.sent(block); latest.unchanged(block)  # not read back yet: its order is unknown
False
>>> latest.on_accepted(block); latest.unchanged(block)
True
>>> latest.forget(block.scope.key()); latest.unchanged(block)
False
"""

from __future__ import annotations

from tokenbrake.clients.control_gate import Ignored
from tokenbrake.schemas.control import ControlEvent

Decision = tuple[str, str | None, float | None]
ALLOW: Decision = ("allow", None, None)


def decision_of(control: ControlEvent) -> Decision:
    return (control.action, control.downgrade_to, control.max_rps)


class TopicLatest:
    """Scope key -> the decision of the control topic's latest accepted record."""

    def __init__(self) -> None:
        self._latest: dict[str, Decision] = {}
        self._in_flight: dict[str, str] = {}  # control_id of our own sends not read back -> scope key
        self._unsure: dict[str, int] = {}  # scope key -> own sends in flight, or -1 after a refused record

    def unchanged(self, control: ControlEvent) -> bool:
        """The topic's latest accepted record for the control's scope says the same (an allow
        for a scope the topic never controlled counts as said), and nothing is in doubt."""
        key = control.scope.key()
        if key in self._unsure:
            return False
        return self._latest.get(key, ALLOW) == decision_of(control)

    def sent(self, control: ControlEvent) -> None:
        """The worker published ``control``."""
        key = control.scope.key()
        self._in_flight[control.control_id] = key
        self._unsure[key] = max(self._unsure.get(key, 0), 0) + 1

    def on_accepted(self, control: ControlEvent) -> None:
        """A record the control view accepted, in topic order (KillSwitch.on_change)."""
        key = control.scope.key()
        self._latest[key] = decision_of(control)
        if self._in_flight.pop(control.control_id, None) is not None:
            left = self._unsure.get(key, 1) - 1
            if left > 0:
                self._unsure[key] = left
            else:
                self._unsure.pop(key, None)
        elif self._unsure.get(key) == -1:
            self._unsure.pop(key)  # a valid record follows the refused one

    def forget(self, key: str) -> None:
        """The latest record under ``key`` is one no view accepts: the next control goes out."""
        self._latest.pop(key, None)
        if key not in self._unsure:
            self._unsure[key] = -1

    def on_ignored(self, written_under: str | None, control: ControlEvent | None, reason: Ignored) -> None:
        """KillSwitch.on_ignored: a refused record (except an expired one, which is the
        scope's own latest word) hides whatever was under its key."""
        key = written_under or (control.scope.key() if control is not None else None)
        if key is not None and reason is not Ignored.EXPIRED:
            self.forget(key)
