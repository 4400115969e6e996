"""What the report shows, read from ClickHouse for a window [start, end) and optionally one
tenant: plain data (Decimal money), rendered by :mod:`report_terminal` and :mod:`report_html`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tokenbrake.streams.decide.policies import BudgetPolicy
from tokenbrake.streams.finops.forecast import BudgetUse, budget_utilisation

TOP_N = 8


@dataclass
class BurnDown:
    use: BudgetUse
    cumulative: list[tuple[datetime, Decimal]]  # spend so far at the end of each hour or day of the period


@dataclass
class Report:
    start: datetime
    end: datetime
    tenant: str
    total_usd: Decimal = Decimal(0)
    requests: int = 0
    daily: list[tuple[date, Decimal, int]] = field(default_factory=list)  # day, cost, requests
    top: dict[str, list[tuple[str, Decimal, int]]] = field(default_factory=dict)  # by -> (name, cost, requests)
    lost: list[tuple[date, Decimal, Decimal]] = field(default_factory=list)  # day, failed, retries
    savings: list[tuple[date, Decimal, Decimal]] = field(default_factory=list)  # day, prompt cache, semantic
    downgrade_savings_usd: Decimal = Decimal(0)  # downgraded calls at the requested model's price, minus paid
    budgets: list[BurnDown] = field(default_factory=list)
    unsupported_budgets: list[str] = field(default_factory=list)
    timeline: list[tuple[datetime, str, str, str]] = field(default_factory=list)  # ts, kind, what, scope
    #: per feature and kind over the window: (feature, kind, outcomes, cost, cost per outcome)
    outcomes: list[tuple[str, str, int, Decimal, Decimal]] = field(default_factory=list)

    @property
    def cost_per_request(self) -> Decimal:
        return (self.total_usd / self.requests).quantize(Decimal("1e-9")) if self.requests else Decimal(0)


def _params(report: Report) -> dict[str, Any]:
    return {"lo": report.start.date(), "hi": report.end.date(), "lo_ts": report.start.replace(tzinfo=None),
            "hi_ts": report.end.replace(tzinfo=None), "tenant": report.tenant}


_TENANT = "(%(tenant)s = '' OR tenant_id = %(tenant)s)"
_DAYS = f"day >= %(lo)s AND day < %(hi)s AND {_TENANT}"


def collect(client: Any, db: str, start: datetime, end: datetime, tenant: str, policies: list[BudgetPolicy],
            asof: datetime) -> Report:
    """The report of [start, end) (whole days), budgets as of ``asof``."""
    r = Report(start, end, tenant)
    p = _params(r)

    def rows(sql: str) -> list[tuple]:
        return client.query(sql.format(db=db), parameters=p).result_rows

    r.daily = [(d, Decimal(c), int(n)) for d, c, n in rows(
        f"SELECT day, sum(cost_usd), sum(requests) FROM {{db}}.usage_daily FINAL WHERE {_DAYS} "
        "GROUP BY day ORDER BY day")]
    r.total_usd = sum((c for _, c, _ in r.daily), Decimal(0))
    r.requests = sum(n for _, _, n in r.daily)
    for by, column in (("tenant", "tenant_id"), ("feature", "feature_id"), ("model", "model"),
                       ("environment", "environment"), ("region", "region"), ("prompt version", "prompt_version"),
                       ("tier", "tenant_tier")):
        r.top[by] = [(name or "(none)", Decimal(c), int(n)) for name, c, n in rows(
            f"SELECT {column}, sum(cost_usd) AS c, sum(requests) FROM {{db}}.usage_daily FINAL WHERE {_DAYS} "
            f"GROUP BY {column} ORDER BY c DESC, {column} LIMIT {TOP_N}")]
    r.top["user"] = [(u, Decimal(c), int(n)) for u, c, n in rows(
        f"SELECT user_id, sum(cost_usd) AS c, count() FROM {{db}}.usage_events FINAL WHERE ts >= %(lo_ts)s "
        f"AND ts < %(hi_ts)s AND {_TENANT} GROUP BY user_id ORDER BY c DESC, user_id LIMIT {TOP_N}")]
    r.lost = [(d, Decimal(f), Decimal(t)) for d, f, t in rows(
        f"SELECT day, sum(failed_cost_usd), sum(retry_cost_usd) FROM {{db}}.cost_lost_daily WHERE {_DAYS} "
        "GROUP BY day ORDER BY day")]
    r.savings = [(d, Decimal(a), Decimal(b)) for d, a, b in rows(
        f"SELECT day, sum(prompt_cache_savings_usd), sum(semantic_cache_savings_usd) FROM {{db}}.cache_savings_daily "
        f"WHERE {_DAYS} GROUP BY day ORDER BY day")]
    r.downgrade_savings_usd = Decimal(rows(
        f"SELECT sum(savings_usd) FROM {{db}}.downgrade_savings_daily WHERE {_DAYS}")[0][0] or 0)
    uses = budget_utilisation(client, db, policies, asof)
    r.budgets = [BurnDown(u, _cumulative(client, db, u, policies, asof)) for u in uses
                 if not tenant or u.tenant_id == tenant]
    r.unsupported_budgets = [b.id for b in policies if b.id not in {u.policy_id for u in uses}]
    r.timeline = [(ts, kind, what, scope) for ts, kind, what, scope in rows(
        "SELECT * FROM ("
        f"SELECT issued_at AS ts, 'control' AS kind, concat(action, ' (', rule, ', by ', issued_by, ')'), scope_key "
        f"FROM {{db}}.control_events FINAL WHERE issued_at >= %(lo_ts)s AND issued_at < %(hi_ts)s AND {_TENANT} "
        f"UNION ALL SELECT ts, concat('alert ', state), concat(rule, ' [', severity, ']: ', summary), scope_key "
        f"FROM {{db}}.alerts FINAL WHERE ts >= %(lo_ts)s AND ts < %(hi_ts)s AND {_TENANT}) ORDER BY ts, kind")]
    r.outcomes = _outcomes(client, db, start, end, tenant)
    return r


def _outcomes(client: Any, db: str, start: datetime, end: datetime,
              tenant: str) -> list[tuple[str, str, int, Decimal, Decimal]]:
    from tokenbrake.streams.finops.outcomes import cost_per_outcome

    totals: dict[tuple[str, str], list] = {}
    for row in cost_per_outcome(client, db, start, end, tenant):
        key = (f"{row['tenant_id']}/{row['feature_id']}" if not tenant else row["feature_id"], row["kind"])
        acc = totals.setdefault(key, [0, Decimal(0)])
        acc[0] += row["outcomes"]
        acc[1] += row["cost_usd"]
    return sorted(((f, k, n, c, (c / n).quantize(Decimal("1e-9"))) for (f, k), (n, c) in totals.items()),
                  key=lambda t: (-t[4], t[0], t[1]))


def _cumulative(client: Any, db: str, use: BudgetUse, policies: list[BudgetPolicy],
                asof: datetime) -> list[tuple[datetime, Decimal]]:
    """The scope's running spend in its period, per day (month budgets) or hour (day budgets)."""
    policy = next(b for b in policies if b.id == use.policy_id)
    column = {"feature": "feature_id", "model": "model"}.get(policy.scope.dimension)
    bucket = "toStartOfHour(hour)" if use.period == "day" else "toStartOfDay(hour)"
    step = timedelta(hours=1) if use.period == "day" else timedelta(days=1)
    result = client.query(
        f"SELECT {bucket} AS b, sum(cost_usd) FROM {db}.usage_hourly FINAL WHERE tenant_id = %(t)s "
        f"AND hour >= %(ps)s AND hour <= %(asof)s AND (%(tier)s = '' OR tenant_tier = %(tier)s)"
        + (f" AND {column} = %(v)s" if column else "") + " GROUP BY b ORDER BY b",
        parameters={"t": use.tenant_id, "ps": use.period_start.replace(tzinfo=None), "asof": asof.replace(tzinfo=None),
                    "tier": policy.scope.tier or "", "v": use.scope_value})
    out, running = [], Decimal(0)
    for b, cost in result.result_rows:
        running += Decimal(cost)
        out.append((b + step, running))
    return out
