"""The policies file: budgets and per-request caps, validated with line numbers.

Example::

    budgets:
      - id: acme-daily
        scope: {tenant: acme}               # tenant "*" = each tenant; optional feature|user|model, tier
        period: day                         # day | month | rolling:<30m|1h|7d>
        limit_usd: "50.00"
        warn_at: [0.8, 0.95]                # alert only (warning); default [0.8], [] for none
        on_exceed:                          # escalation steps, by fraction of the limit
          - {at: 1.0, action: downgrade, to_model: gpt-4o-mini}
          - {at: 1.25, action: block}
    request_cost_caps:                      # default: one cap of $1.00 on every tenant ([] for none)
      - {id: one-dollar-call, scope: {tenant: "*"}, max_usd: "1.00"}
    unit_costs:                             # cost per business outcome (or per session): see decide.unit_costs
      - id: support-cost-per-ticket
        scope: {tenant: "*", feature: support_chat}   # "*" = each tenant / each feature
        per: ticket_resolved                # an outcome kind, or "session"
        period: day                         # day | month
        max_usd: "0.10"
        min_count: 5                        # outcomes (sessions) before the average is judged
        action: {action: downgrade, to_model: gpt-4o-mini}   # optional: without it, an alert only
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from tokenbrake.schemas.common import no_float
from tokenbrake.streams.aggregate.periods import parse_duration_minutes
from tokenbrake.streams.price.rates import usd_to_nanos
from tokenbrake.streams.yaml_files import validate_yaml

#: ClickHouse stores money as Decimal(18, 9): below a billion (controls and alerts carry it)
Money = Annotated[Decimal, BeforeValidator(no_float), Field(gt=0, lt=Decimal(10**9))]
Fraction = Annotated[Decimal, BeforeValidator(lambda v: Decimal(str(v)) if isinstance(v, float) else v),
                     Field(gt=0)]


class PolicyScope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = "*"
    feature: str | None = None
    user: str | None = None
    model: str | None = None
    tier: str | None = None

    @model_validator(mode="after")
    def _one_dimension(self) -> PolicyScope:
        named = [n for n in ("feature", "user", "model") if getattr(self, n) is not None]
        if len(named) > 1:
            raise ValueError(f"a scope names at most one of feature, user, model (got {', '.join(named)})")
        return self

    @property
    def dimension(self) -> str:
        """Which aggregate this scope reads: tenant, feature, user or model."""
        for name in ("feature", "user", "model"):
            if getattr(self, name) is not None:
                return name
        return "tenant"

    def matches(self, tenant: str, feature: str, user: str, model: str, tier: str | None) -> bool:
        return ((self.tenant == "*" or self.tenant == tenant)
                and (self.feature in (None, "*", feature))
                and (self.user in (None, "*", user))
                and (self.model in (None, "*", model))
                and (self.tier is None or self.tier == tier))


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: Fraction = Decimal(1)
    action: Literal["throttle", "downgrade", "block"]
    max_rps: float | None = Field(default=None, gt=0)
    to_model: str | None = None

    @model_validator(mode="after")
    def _arguments(self) -> Step:
        if self.action == "throttle" and self.max_rps is None:
            raise ValueError("throttle needs max_rps")
        if self.action == "downgrade" and not self.to_model:
            raise ValueError("downgrade needs to_model")
        return self


class BudgetPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    scope: PolicyScope = PolicyScope()
    period: str
    limit_usd: Money
    warn_at: list[Fraction] = [Decimal("0.8")]  # every budget warns at 80% unless it says otherwise
    on_exceed: list[Step] = []
    action: Step | None = None  # shorthand for on_exceed: [action]

    @field_validator("period")
    @classmethod
    def _period(cls, v: str) -> str:
        if v in ("day", "month"):
            return v
        if v.startswith("rolling:"):
            parse_duration_minutes(v.removeprefix("rolling:"))
            return v
        raise ValueError("period must be day, month or rolling:<duration> such as rolling:1h")

    @model_validator(mode="after")
    def _levels(self) -> BudgetPolicy:
        if any(w >= 1 for w in self.warn_at):
            raise ValueError("warn_at fractions must be below 1.0 (exceeding is 1.0)")
        if self.action is not None and self.on_exceed:
            raise ValueError("give either action or on_exceed, not both")
        ats = [s.at for s in self.steps]
        if ats != sorted(set(ats)):
            raise ValueError("on_exceed steps must have increasing, distinct 'at' values")
        if ats and ats[0] < 1:
            raise ValueError("on_exceed steps start at 1.0 or above (use warn_at below)")
        return self

    @property
    def steps(self) -> list[Step]:
        return [self.action] if self.action is not None else list(self.on_exceed)

    @property
    def rolling_minutes(self) -> int | None:
        return parse_duration_minutes(self.period[8:]) if self.period.startswith("rolling:") else None

    def thresholds_nanos(self) -> list[int]:
        """Spend levels that raise the level: warn fractions, then 1.0 (or each step)."""
        limit = usd_to_nanos(self.limit_usd)
        fractions = sorted(set(self.warn_at)) + ([s.at for s in self.steps] or [Decimal(1)])
        return [int(limit * f) for f in fractions]

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


class RequestCostCap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    scope: PolicyScope = PolicyScope()
    max_usd: Money


class UnitCostScope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = "*"
    feature: str = "*"

    def matches(self, tenant: str, feature: str) -> bool:
        return self.tenant in ("*", tenant) and self.feature in ("*", feature)


class UnitCostPolicy(BaseModel):
    """A tenant x feature's spend in the period over its outcomes of kind ``per`` (or its
    distinct sessions) above ``max_usd``: an alert, and the optional ``action``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    scope: UnitCostScope = UnitCostScope()
    per: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")  # an outcome kind, or "session"
    period: Literal["day", "month"] = "day"
    max_usd: Money
    min_count: int = Field(default=1, ge=1)  # outcomes (sessions) before the average is judged
    action: Step | None = None

    @property
    def per_session(self) -> bool:
        return self.per == "session"

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


#: on by default (the seeds' hard alert "a single call over $1"); a policies file's own
#: ``request_cost_caps`` replace it, ``request_cost_caps: []`` turns it off
DEFAULT_REQUEST_COST_CAP = RequestCostCap(id="default-1usd", max_usd=Decimal("1.00"))


class PoliciesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budgets: list[BudgetPolicy] = []
    request_cost_caps: list[RequestCostCap] = [DEFAULT_REQUEST_COST_CAP]
    unit_costs: list[UnitCostPolicy] = []
    detectors: dict[str, dict[str, Any]] = {}
    #: models with no price in the catalog or the overrides that may still be named (self-hosted,
    #: private deployments): the explicit opt-out of the start-up check (see decide.named_models)
    private_models: list[str] = []
    #: the tenant tiers scopes may filter on; unset = free, pro, team, business, enterprise
    tiers: list[str] = []

    @property
    def max_rolling_minutes(self) -> int:
        """The longest rolling window: how long minute buckets must be kept."""
        return max((b.rolling_minutes or 0 for b in self.budgets), default=0)

    @property
    def needs_user_minutes(self) -> bool:
        return any(b.rolling_minutes and b.scope.dimension == "user" for b in self.budgets)

    @property
    def needs_user_months(self) -> bool:
        """A budget per user and calendar month: the only reader of per-user month totals."""
        return any(b.period == "month" and b.scope.dimension == "user" for b in self.budgets)

    @field_validator("detectors")
    @classmethod
    def _detectors(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from tokenbrake.streams.decide.detection import parse_detector_config

        parse_detector_config(v)
        return v

    @model_validator(mode="after")
    def _unique_ids(self) -> PoliciesFile:
        ids = [p.id for p in self.budgets] + [c.id for c in self.request_cost_caps] + [u.id for u in self.unit_costs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"policy ids must be unique: {', '.join(dupes)}")
        return self


class PolicyError(ValueError):
    """The policies file is invalid; the message names each bad line and field."""


def parse_policies(text: str, source: str = "<policies>") -> PoliciesFile:
    return validate_yaml(text, PoliciesFile, source, PolicyError, "policies")


def load_policies(path: Path | None) -> PoliciesFile:
    if path is None:
        return PoliciesFile()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PolicyError(f"cannot read policies file {path}: {exc}") from exc
    return parse_policies(text, str(path))
