"""ControlEvent and AlertEvent, emitted by the worker (and by operators for controls)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tokenbrake.schemas.common import Deadline, Id

Action = Literal["allow", "throttle", "downgrade", "block"]
Severity = Literal["info", "warning", "critical"]
AlertState = Literal["firing", "resolved"]

#: How strongly an action restricts traffic; the strongest active one wins on a scope.
ACTION_RANK: dict[str, int] = {"allow": 0, "downgrade": 1, "throttle": 2, "block": 3}


class Scope(BaseModel):
    """What a control or alert applies to. ``None`` means "any"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: Id
    feature_id: Id | None = None
    user_id: Id | None = None
    model: Id | None = None

    def key(self) -> str:
        """Canonical string: the compacted control topic's message key."""
        return scope_key(self.tenant_id, self.feature_id, self.user_id, self.model)


def scope_key(tenant_id: str, feature_id: str | None = None, user_id: str | None = None,
              model: str | None = None) -> str:
    """``tenant=acme/feature=chat/user=*/model=*``; ``*`` marks an unset part.

    Distinct scopes always get distinct keys: in ids, ``%``, ``/`` and ``=`` are
    percent-encoded and an id that is exactly ``*`` is written ``%2A``.

    >>> scope_key("acme", "chat")
    'tenant=acme/feature=chat/user=*/model=*'
    >>> scope_key("a/feature=b") != scope_key("a", "b/feature=*"), scope_key("acme", "*")
    (True, 'tenant=acme/feature=%2A/user=*/model=*')
    """
    return f"tenant={_part(tenant_id)}/feature={_part(feature_id)}/user={_part(user_id)}/model={_part(model)}"


def parse_scope_key(key: str) -> Scope | None:
    """The Scope a key names (the inverse of :func:`scope_key`); None when it names none.

    >>> parse_scope_key(scope_key("a/feature=b", None, "h:1"))
    Scope(tenant_id='a/feature=b', feature_id=None, user_id='h:1', model=None)
    >>> parse_scope_key("tenant=*/feature=*/user=*/model=*"), parse_scope_key("garbage")
    (None, None)
    """
    parts = key.split("/")
    names = ("tenant", "feature", "user", "model")
    if len(parts) != 4 or any(not p.startswith(f"{n}=") for p, n in zip(parts, names, strict=True)):
        return None
    values = [p.partition("=")[2] for p in parts]
    if any("=" in v or not v for v in values):
        return None
    tenant, feature, user, model = (None if v == "*" else unquote(v) for v in values)
    try:
        scope = Scope(tenant_id=tenant, feature_id=feature, user_id=user, model=model)
    except ValidationError:
        return None
    return scope if scope.key() == key else None  # only the canonical spelling names a scope


def _part(value: str | None) -> str:
    if not value:
        return "*"
    if value == "*":
        return "%2A"
    if "%" in value or "/" in value or "=" in value:
        return value.replace("%", "%25").replace("/", "%2F").replace("=", "%3D")
    return value


class Reason(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: str
    observed: Decimal
    threshold: Decimal
    period: str
    detail: str | None = None


class ControlEvent(BaseModel):
    """The current decision for one scope. The highest ``seq`` per scope key wins.

    ``seq`` is the issuer's per-scope sequence (see :mod:`schemas.sequence`): a hybrid logical
    clock in milliseconds, stamped when the control is signed and covered by the signature.
    Records written before it existed have none (see ``schemas.sequence.order_key``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    control_id: Id
    issued_at: Deadline
    seq: int | None = Field(None, ge=0, description="per-scope sequence (ms hybrid logical clock), signed")
    scope: Scope
    action: Action
    max_rps: float | None = None
    downgrade_to: Id | None = None
    reason: Reason
    expires_at: Deadline | None = None
    policy_id: str | None = None
    issued_by: str = "worker"
    key_id: str | None = None
    signature: str | None = None


class AlertEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_id: Id
    ts: Deadline
    rule: str
    scope: Scope
    severity: Severity
    state: AlertState
    summary: str
    observed: Decimal
    threshold: Decimal
    dedup_key: str
    policy_id: str | None = None
    tenant_tier: Id | None = None  # when the rule knew it (budgets, per-call caps): routes can match on it
