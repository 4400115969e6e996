"""Which control events a view accepts: the pure core of :class:`clients.KillSwitch`.

A record read from the control topic is accepted only when, in this order:
  1. it parses as a ControlEvent                                     (else ``unparsable``);
  2. its HMAC verifies with a key of the keyring: unsigned, tampered, or signed with a key
     that is unknown or was removed (revoked) from the keyring     (else ``bad_signature``);
  3. it carries a sequence, unless unsequenced records are accepted (else ``unsequenced``);
  4. neither its ``issued_at`` nor its ``seq`` lies more than ``max_future_skew_ms`` ahead of
     this host's clock: a record dated years ahead would otherwise outrank every later
     one                                                             (else ``future``);
  5. its ``order_key`` (``schemas.sequence``) is strictly above the highest one accepted for
     its scope: a re-published old record, or the same record again, changes nothing
                                                                     (else ``stale``);
  6. it has not expired. An expired record that passed 1-5 *is* the scope's latest word: it
     is remembered as such (so older records stay refused) and the view clears the scope
                                                                     (``expired``).
Nothing here reads a clock: the caller passes ``now_ms``.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import ValidationError

from tokenbrake.schemas.codec import JSONDecodeError, loads
from tokenbrake.schemas.control import ControlEvent
from tokenbrake.schemas.sequence import issued_ms, order_key
from tokenbrake.schemas.signing import verify


class Ignored(StrEnum):
    UNPARSABLE = "unparsable"
    BAD_SIGNATURE = "bad_signature"
    UNSEQUENCED = "unsequenced"
    FUTURE = "future"
    STALE = "stale"
    EXPIRED = "expired"
    TOMBSTONE = "tombstone"  # a null record: once compacted, the key's records are gone


def expires_ms(control: ControlEvent) -> int | None:
    return int(control.expires_at.timestamp() * 1000) if control.expires_at is not None else None


class ControlGate:
    """Judges control records for one view; remembers the highest order key per scope.

    >>> from tokenbrake.schemas.control import Reason, Scope
    >>> from tokenbrake.schemas.signing import sign
    >>> gate = ControlGate({"k1": b"s"}, max_future_skew_ms=1_000)
    >>> def signed(seq, action="block"):
    ...     c = ControlEvent(control_id=f"c{seq}", issued_at=seq, seq=seq, scope=Scope(tenant_id="acme"),
    ...                      action=action, reason=Reason(rule="r", observed=1, threshold=1, period="day"))
    ...     return sign(c, "k1", b"s")
    >>> [gate.judge(signed(s), now_ms=10_000)[1] for s in (5_000, 4_000, 5_000, 6_000, 99_000)]
    [None, <Ignored.STALE: 'stale'>, <Ignored.STALE: 'stale'>, None, <Ignored.FUTURE: 'future'>]
    >>> gate.last_seq("tenant=acme/feature=*/user=*/model=*")
    6000
    """

    def __init__(self, keyring: dict[str, bytes], *, max_future_skew_ms: int = 300_000,
                 accept_unsequenced: bool = True) -> None:
        self.keyring = keyring
        self.max_future_skew_ms = max_future_skew_ms
        self.accept_unsequenced = accept_unsequenced
        self._latest: dict[str, tuple[int, str]] = {}  # scope key -> highest order key accepted

    def parse(self, value: bytes) -> ControlEvent | None:
        try:
            return ControlEvent.model_validate(loads(value))
        except (JSONDecodeError, ValidationError, TypeError, ValueError):
            return None

    def judge(self, control: ControlEvent | None, now_ms: int) -> tuple[ControlEvent | None, Ignored | None]:
        """``(control, None)`` when accepted; ``(control or None, reason)`` when not."""
        if control is None:
            return None, Ignored.UNPARSABLE
        if not verify(control, self.keyring):
            return control, Ignored.BAD_SIGNATURE
        if control.seq is None and not self.accept_unsequenced:
            return control, Ignored.UNSEQUENCED
        horizon = now_ms + self.max_future_skew_ms
        if issued_ms(control) > horizon or (control.seq is not None and control.seq > horizon):
            return control, Ignored.FUTURE
        key, rank = control.scope.key(), order_key(control)
        held = self._latest.get(key)
        if held is not None and rank <= held:
            return control, Ignored.STALE
        self._latest[key] = rank
        deadline = expires_ms(control)
        if deadline is not None and deadline <= now_ms:
            return control, Ignored.EXPIRED
        return control, None

    def last_seq(self, scope_key: str) -> int | None:
        """The highest sequence accepted on the scope (an issuer's ``last_seen``)."""
        held = self._latest.get(scope_key)
        return held[0] if held is not None else None
