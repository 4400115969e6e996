"""What the core emits: the outbox of ControlEvents and AlertEvents of one batch, and the
alert builder. IDs are derived from the content, so a backtest and a live run produce the
same events. Which control is in force on a scope is decided by ``decide.board``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from tokenbrake.schemas.control import AlertEvent, ControlEvent, Scope


def stable_id(*parts: object) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=10).hexdigest()


def ts_of(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass
class Emitted:
    """What the core decided during one batch, in order."""

    controls: list[ControlEvent] = field(default_factory=list)
    alerts: list[AlertEvent] = field(default_factory=list)

    def extend(self, other: Emitted) -> None:
        self.controls.extend(other.controls)
        self.alerts.extend(other.alerts)


def alert(out: Emitted, *, rule: str, scope: Scope, severity: str, state: str, summary: str,
          observed: Decimal, threshold: Decimal, dedup_key: str, at_ms: int, policy_id: str | None = None,
          tenant_tier: str | None = None) -> None:
    out.alerts.append(AlertEvent(
        alert_id=stable_id(dedup_key, state, severity, at_ms), ts=ts_of(at_ms), rule=rule, scope=scope,
        severity=severity, state=state, summary=summary, observed=observed, threshold=threshold,
        dedup_key=dedup_key, policy_id=policy_id, tenant_tier=tenant_tier))
