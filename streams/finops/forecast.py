"""Budget utilisation per policy and period, with two end-of-period forecasts, in SQL.

For a ``day`` or ``month`` budget at the instant ``asof`` (UTC periods, as the worker's):

* ``spent``: the scope's cost from the period start to ``asof`` (hourly rollup rows up to
  and including the current hour);
* ``linear``: ``spent x period length / time elapsed`` (truncated to 9 decimals);
* ``weekday``: ``spent`` plus, for every whole hour left in the period after the current one,
  the mean cost of the same hour of the week over the previous four weeks (a missing hour
  counts as zero). Monday mornings are forecast from Monday mornings: a month that ends on a
  weekend is not forecast as if it ended on a busy weekday. Computed as one pass over the
  history hours, each weighted by how many of its +7, +14, +21, +28 day copies fall in the
  hours left, times 1/4: exact Decimal arithmetic.

Scopes read from ``usage_hourly``: tenant (``*`` = each tenant), tenant x feature or
tenant x model (``*`` = each), optionally a tier. Budgets per user and ``rolling:`` periods
are the worker's live state (``tokenbrake status``) and are listed with ``supported=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokenbrake.streams.decide.policies import BudgetPolicy

_SQL = """
WITH toDateTime(%(asof)s, 'UTC') AS asof, {start} AS ps, {end} AS pe, toStartOfHour(asof) AS cur
SELECT tenant_id, {value} AS scope_value, ps, pe,
       sumIf(cost_usd, hour >= ps) AS spent,
       if(asof > ps, spent * toDecimal128(dateDiff('second', ps, pe), 0)
                     / toDecimal128(dateDiff('second', ps, asof), 0), spent) AS linear,
       spent + toDecimal128(sumIf(cost_usd * toDecimal64(
                   arrayCount(k -> hour + toIntervalDay(7 * k) > cur AND hour + toIntervalDay(7 * k) < pe,
                              [1, 2, 3, 4]), 0), hour < cur), 9) * toDecimal32('0.25', 2) AS weekday
FROM {db}.usage_hourly FINAL
WHERE hour >= least(ps, cur - INTERVAL 28 DAY) AND hour <= cur
  AND (%(tenant)s = '*' OR tenant_id = %(tenant)s) AND (%(tier)s = '' OR tenant_tier = %(tier)s)
  AND {value_filter}
GROUP BY tenant_id, scope_value
HAVING spent > 0 OR weekday > 0
ORDER BY tenant_id, scope_value
"""

_PERIODS = {"day": ("toStartOfDay(asof)", "ps + INTERVAL 1 DAY"),
            "month": ("toDateTime(toStartOfMonth(asof), 'UTC')", "addMonths(ps, 1)")}


@dataclass(frozen=True)
class BudgetUse:
    policy_id: str
    period: str
    tenant_id: str
    scope_value: str  # the feature or model of a per-feature/model budget, '' for a tenant budget
    period_start: datetime
    period_end: datetime
    limit_usd: Decimal
    spent_usd: Decimal
    linear_forecast_usd: Decimal
    weekday_forecast_usd: Decimal

    @property
    def used(self) -> Decimal:
        """Fraction of the limit spent."""
        return self.spent_usd / self.limit_usd

    @property
    def remaining_usd(self) -> Decimal:
        return max(self.limit_usd - self.spent_usd, Decimal(0))


def supported(policy: BudgetPolicy) -> bool:
    return policy.period in _PERIODS and policy.scope.dimension in ("tenant", "feature", "model")


def utilisation_sql(db: str, policy: BudgetPolicy) -> str:
    start, end = _PERIODS[policy.period]
    column = {"feature": "feature_id", "model": "model"}.get(policy.scope.dimension)
    if column is None:
        value, value_filter = "''", "1"
    else:
        value, value_filter = column, f"(%(value)s = '*' OR {column} = %(value)s)"
    return _SQL.format(start=start, end=end, db=db, value=value, value_filter=value_filter)


def budget_utilisation(client: Any, db: str, policies: list[BudgetPolicy], asof: datetime) -> list[BudgetUse]:
    """Every supported budget's scopes with spend or a forecast in the period containing ``asof``."""
    out = []
    for p in policies:
        if not supported(p):
            continue
        s = p.scope
        params = {"asof": asof.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds"), "tenant": s.tenant,
                  "tier": s.tier or "", "value": s.feature or s.model or ""}
        for tenant, value, ps, pe, spent, linear, weekday in client.query(utilisation_sql(db, p),
                                                                          parameters=params).result_rows:
            out.append(BudgetUse(p.id, p.period, tenant, value, ps, pe, p.limit_usd, Decimal(spent),
                                 Decimal(linear).quantize(Decimal("1e-9")), Decimal(weekday)))
    return out
