"""Keep the control topic's latest record per scope one that every view accepts.

A KillSwitch refuses forged, tampered, replayed (stale) and far-future records, so while it
runs they change nothing. But the topic is compacted: Kafka keeps only the *last* record
under each key, so a refused record written after a scope's real control would, once the
log is compacted, be all that a KillSwitch starting later finds for the scope, and the
scope's block would be gone for it. The worker, which reads the topic back, therefore
answers such a record on a scope it owns by publishing the scope's effective decision
again, with a newer sequence: the last record is a valid one again. A tombstone (a null
record) is answered the same way: once compacted it deletes every record under its key.

Only keys with a valid control behind them are re-asserted (garbage under a key that never
held one hides nothing), once per tick however many records arrived (a flood costs one write
per scope and tick), and not when a valid record followed under the same key (as when a
worker re-reads a history that already holds its answer).
"""

from __future__ import annotations

from collections.abc import Callable

from tokenbrake.clients.control_gate import Ignored
from tokenbrake.schemas.control import ControlEvent, Scope, parse_scope_key

#: refusals that leave a record a late view cannot use as the last one under its key
#: (``expired`` records are newer valid ones: they say the control ended)
HIDES_THE_CONTROL = frozenset({Ignored.UNPARSABLE, Ignored.BAD_SIGNATURE, Ignored.UNSEQUENCED, Ignored.FUTURE,
                               Ignored.STALE, Ignored.TOMBSTONE})


class Reasserter:
    """``holds(key)``: whether the view accepted a valid control under ``key``.

    >>> r = Reasserter(holds=lambda key: key.startswith("tenant=acme/"))
    >>> r.on_ignored("tenant=acme/feature=*/user=*/model=*", None, Ignored.BAD_SIGNATURE)
    >>> r.on_ignored("tenant=zzz/feature=*/user=*/model=*", None, Ignored.BAD_SIGNATURE)  # never held one
    >>> [s.tenant_id for s in r.take(owns=lambda tenant: True)], r.take(owns=lambda tenant: True)
    (['acme'], [])
    """

    def __init__(self, holds: Callable[[str], bool]) -> None:
        self.holds = holds
        self._pending: set[str] = set()
        self.reasserted = 0

    def on_ignored(self, written_under: str | None, control: ControlEvent | None, reason: Ignored) -> None:
        key = written_under or (control.scope.key() if control is not None else None)
        if key is not None and reason in HIDES_THE_CONTROL:
            self._pending.add(key)

    def on_accepted(self, control: ControlEvent) -> None:
        self._pending.discard(control.scope.key())  # the key's last record is a valid one again

    def take(self, owns: Callable[[str], bool]) -> list[Scope]:
        """The scopes to publish again now, among those whose tenant this worker ``owns``
        (the others are left to their owner, which reads the same records)."""
        scopes = []
        for key in sorted(self._pending):
            scope = parse_scope_key(key)
            if scope is not None and self.holds(key) and owns(scope.tenant_id):
                scopes.append(scope)
        self._pending.clear()
        self.reasserted += len(scopes)
        return scopes
