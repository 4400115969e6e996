"""Per-scope control sequences: what makes a signed control impossible to replay.

Every control carries ``seq``, stamped by its issuer when it signs and covered by the
signature. A view (``clients.KillSwitch``) keeps, per scope, the highest ``order_key`` it
has verified and accepts only a strictly higher one, so a re-published old record (a
``block`` after the operator's ``allow``, an ``allow`` over a ``block``) changes nothing.

The sequence is a hybrid logical clock in milliseconds::

    seq = max(now_ms, last_seq_seen_for_scope + 1)

- **Survives restarts without storage.** Both issuers (the worker and ``tokenbrake
  control``) read the control topic back before they issue, so ``last_seq_seen`` is the
  highest sequence on the topic; the wall clock carries it across a restart anyway unless it
  went backwards, and reading the topic covers that.
- **Concurrent issuers** (a worker and an operator at the same moment, two workers during a
  rebalance) are totally ordered by ``(seq, control_id)``: every view picks the same winner
  whatever order the records arrive in. The loser is ignored everywhere (``stale``).
- **Records without ``seq``** (written before it existed) are ordered by their
  ``issued_at`` in ms, so an upgraded view keeps the blocks already on the topic; a view may
  refuse them (``KillSwitch(accept_unsequenced=False)``) once the topic holds none.
- ``issued_at`` is clamped to the issuer's clock when it signs (a worker's control is dated
  by the event that caused it, which may lie slightly ahead): views reject anything dated
  more than a bounded skew into the future.

>>> next_seq(1_000, None), next_seq(1_000, 999), next_seq(1_000, 1_000), next_seq(1_000, 5_000)
(1000, 1000, 1001, 5001)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from tokenbrake.schemas.control import ControlEvent
from tokenbrake.schemas.signing import sign


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def next_seq(now_ms: int, last_seen: int | None) -> int:
    """The next sequence for a scope whose highest known sequence is ``last_seen``."""
    return now_ms if last_seen is None else max(now_ms, last_seen + 1)


def issued_ms(control: ControlEvent) -> int:
    return int(control.issued_at.timestamp() * 1000)


def order_key(control: ControlEvent) -> tuple[int, str]:
    """Total order of the controls of one scope: ``(seq, control_id)``; ``issued_at`` in ms
    stands in for the sequence of a record written before sequences existed."""
    return (control.seq if control.seq is not None else issued_ms(control), control.control_id)


class ControlSigner:
    """Stamps the next sequence on a control and signs it (the worker's and the CLI's issuer).

    ``last_seen(scope_key)`` is the highest sequence the issuer has read back from the control
    topic for the scope (``KillSwitch.last_seq``); the signer also remembers what it issued
    itself, so two controls issued within one millisecond still get increasing sequences.

    >>> signer = ControlSigner("k1", b"s", clock=lambda: 5_000, last_seen=lambda key: 7_000)
    >>> from tokenbrake.schemas.control import Reason, Scope
    >>> c = ControlEvent(control_id="c1", issued_at=9_000, scope=Scope(tenant_id="acme"), action="block",
    ...                  reason=Reason(rule="r", observed=1, threshold=1, period="day"))
    >>> first, second = signer.issue(c), signer.issue(c)
    >>> first.seq, second.seq, first.issued_at.timestamp(), first.key_id
    (7001, 7002, 5.0, 'k1')
    """

    def __init__(self, key_id: str, secret: bytes, *, clock: Callable[[], int] = wall_clock_ms,
                 last_seen: Callable[[str], int | None] = lambda key: None) -> None:
        self.key_id, self.secret = key_id, secret
        self.clock, self.last_seen = clock, last_seen
        self._issued: dict[str, int] = {}  # scope key -> highest sequence issued here

    def issue(self, control: ControlEvent) -> ControlEvent:
        key = control.scope.key()
        now = self.clock()
        known = [s for s in (self.last_seen(key), self._issued.get(key)) if s is not None]
        seq = next_seq(now, max(known) if known else None)
        self._issued[key] = seq
        update: dict[str, object] = {"seq": seq}
        if issued_ms(control) > now:
            update["issued_at"] = datetime.fromtimestamp(now / 1000, tz=UTC)
        return sign(control.model_copy(update=update), self.key_id, self.secret)
