"""The Grafana "Enforcement" dashboard and the headline alert rules, generated from the same
SQL the commands use (``python -m tokenbrake.streams.finops.grafana_enforcement`` writes
``grafana/dashboards/tokenbrake_enforcement.json`` and
``grafana/provisioning/alerting/tokenbrake.yaml``; a test checks both are current).

Panels use the ClickHouse plugin's macros (``$__timeFilter``, ``$__timeInterval``,
``$__fromTime``, ``$__toTime``, ``$__conditionalAll``) and the variables tenant, feature,
model and environment. DLQ volume by reason, worker lag and sink buffer read the
``pipeline_health`` rows each worker stores (streams.runtime.health). Budget limits are the
policies file's day and month budgets, copied to ``budget_policies`` at every start-up;
unit-cost policies show through their alerts (rule ``unit_cost``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tokenbrake.streams.decide.policies import BudgetPolicy
from tokenbrake.streams.finops import forecast, outcomes

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_PATH = ROOT / "grafana" / "dashboards" / "tokenbrake_enforcement.json"
RULES_PATH = ROOT / "grafana" / "provisioning" / "alerting" / "tokenbrake.yaml"
DB = "tokenbrake"
DS = {"type": "grafana-clickhouse-datasource", "uid": "tokenbrake-clickhouse"}

TENANTS = "tenant_id IN (${tenant:singlequote})"
FILTERS = (f"{TENANTS} AND $__conditionalAll(feature_id IN (${{feature:singlequote}}), $feature) "
           "AND $__conditionalAll(model IN (${model:singlequote}), $model) "
           "AND $__conditionalAll(environment IN (${environment:singlequote}), $environment)")
DAYS = "day >= toDate($__fromTime) AND day <= toDate($__toTime)"


def _month_forecast_sql() -> str:
    """Month to date and both end-of-month forecasts per tenant, as of now (forecast.py's SQL)."""
    sql = forecast.utilisation_sql(DB, BudgetPolicy(id="mtd", period="month", limit_usd="1"))
    sql = sql.replace("%(asof)s", "toString(now())").replace("%(tenant)s", "'*'").replace("%(tier)s", "''")
    return (f"SELECT tenant_id, spent AS month_to_date_usd, linear AS linear_forecast_usd, "
            f"weekday AS weekday_forecast_usd FROM ({sql.strip()}) WHERE {TENANTS} ORDER BY month_to_date_usd DESC")


def _cost_per_outcome_sql(columns: str, group_and_order: str) -> str:
    """outcomes.py's cost per outcome (per tenant, feature, kind and day) over the dashboard's
    time range, tenants and features: ``columns`` of it, then ``group_and_order``."""
    sql = outcomes.cost_per_outcome_sql(DB).replace("%(lo)s", "toString($__fromTime)") \
        .replace("%(hi)s", "toString($__toTime)").replace("%(tenant)s", "''")
    return (f"SELECT {columns} FROM ({sql.strip()}) "
            f"WHERE {TENANTS} AND $__conditionalAll(feature_id IN (${{feature:singlequote}}), $feature) "
            f"{group_and_order}")


#: the pipeline's own figures (streams.runtime.health), over every worker
HEALTH = "tokenbrake.pipeline_health"

#: spend of each day or month budget in its current period, per tenant (and feature or model)
BUDGET_UTILISATION = """SELECT p.policy_id AS policy_id, p.period AS period, u.tenant_id AS tenant_id,
       multiIf(p.feature != '', u.feature_id, p.model != '', u.model, '') AS scope_value,
       any(p.limit_usd) AS limit_usd, sum(u.cost_usd) AS spent_usd, toFloat64(spent_usd / limit_usd) AS used
FROM (SELECT * FROM tokenbrake.budget_policies FINAL
      WHERE version = (SELECT max(version) FROM tokenbrake.budget_policies) AND policy_id != '') AS p
CROSS JOIN (SELECT tenant_id, feature_id, model, tenant_tier, hour, cost_usd FROM tokenbrake.usage_hourly FINAL
            WHERE hour >= toDateTime(toStartOfMonth(now()))) AS u
WHERE u.hour >= if(p.period = 'day', toStartOfDay(now()), toDateTime(toStartOfMonth(now())))
  AND (p.tenant = '*' OR u.tenant_id = p.tenant) AND (p.feature IN ('', '*') OR u.feature_id = p.feature)
  AND (p.model IN ('', '*') OR u.model = p.model) AND (p.tier = '' OR u.tenant_tier = p.tier)
GROUP BY policy_id, period, tenant_id, scope_value"""

#: (title, type, unit, SQL, columns the panel expects)
PANELS: list[tuple[str, str, str, str, list[str]]] = [
    ("Controls issued", "timeseries", "short",
     "SELECT $__timeInterval(issued_at) AS time, action, count() AS controls FROM tokenbrake.control_events FINAL "
     f"WHERE $__timeFilter(issued_at) AND {TENANTS} GROUP BY time, action ORDER BY time",
     ["time", "action", "controls"]),
    ("Controls active now", "table", "short",
     "SELECT scope_key, argMax(action, issued_at) AS action, max(issued_at) AS since, "
     "argMax(expires_at, issued_at) AS expires_at, argMax(rule, issued_at) AS rule, "
     f"argMax(issued_by, issued_at) AS issued_by FROM tokenbrake.control_events FINAL WHERE {TENANTS} "
     "GROUP BY scope_key HAVING action != 'allow' AND (expires_at IS NULL OR expires_at > now()) ORDER BY since DESC",
     ["scope_key", "action", "since", "expires_at", "rule", "issued_by"]),
    ("Alerts fired and resolved", "timeseries", "short",
     "SELECT $__timeInterval(ts) AS time, state, count() AS alerts FROM tokenbrake.alerts FINAL "
     f"WHERE $__timeFilter(ts) AND {TENANTS} GROUP BY time, state ORDER BY time",
     ["time", "state", "alerts"]),
    ("Detector and budget incidents by rule", "barchart", "short",
     "SELECT rule, countIf(state = 'firing') AS fired, countIf(state = 'resolved') AS resolved "
     f"FROM tokenbrake.alerts FINAL WHERE $__timeFilter(ts) AND {TENANTS} GROUP BY rule ORDER BY fired DESC",
     ["rule", "fired", "resolved"]),
    ("Alerts firing now", "table", "short",
     "SELECT dedup_key, argMax(rule, ts) AS rule, argMax(severity, ts) AS severity, argMax(scope_key, ts) AS scope, "
     "argMax(summary, ts) AS summary, max(ts) AS since, argMax(state, ts) AS state FROM tokenbrake.alerts FINAL "
     f"WHERE {TENANTS} GROUP BY dedup_key HAVING state = 'firing' ORDER BY since DESC",
     ["dedup_key", "rule", "severity", "scope", "summary", "since", "state"]),
    ("Spend by day (rollups)", "timeseries", "currencyUSD",
     "SELECT toDateTime(day) AS time, sum(cost_usd) AS spend_usd FROM tokenbrake.usage_daily FINAL "
     f"WHERE {DAYS} AND {FILTERS} GROUP BY time ORDER BY time",
     ["time", "spend_usd"]),
    ("Month to date and end-of-month forecast", "table", "currencyUSD", _month_forecast_sql(),
     ["tenant_id", "month_to_date_usd", "linear_forecast_usd", "weekday_forecast_usd"]),
    ("Budget utilisation (day and month budgets)", "table", "percentunit",
     f"SELECT * FROM ({BUDGET_UTILISATION}) WHERE {TENANTS} ORDER BY used DESC",
     ["policy_id", "period", "tenant_id", "scope_value", "limit_usd", "spent_usd", "used"]),
    ("Money lost: failed attempts and retries", "timeseries", "currencyUSD",
     "SELECT toDateTime(day) AS time, sum(failed_cost_usd) AS failed_usd, sum(retry_cost_usd) AS retries_usd "
     f"FROM tokenbrake.usage_daily FINAL WHERE {DAYS} AND {FILTERS} GROUP BY time ORDER BY time",
     ["time", "failed_usd", "retries_usd"]),
    ("Cost per outcome", "table", "currencyUSD",
     _cost_per_outcome_sql("tenant_id, feature_id, kind, sum(outcomes) AS outcomes, sum(cost_usd) AS cost_usd, "
                           "cost_usd / outcomes AS cost_per_outcome_usd",
                           "GROUP BY tenant_id, feature_id, kind ORDER BY cost_per_outcome_usd DESC"),
     ["tenant_id", "feature_id", "kind", "outcomes", "cost_usd", "cost_per_outcome_usd"]),
    ("Cost per outcome by day", "timeseries", "currencyUSD",
     _cost_per_outcome_sql("toDateTime(day) AS time, concat(feature_id, ' per ', kind) AS unit, "
                           "sum(cost_usd) / sum(outcomes) AS cost_per_outcome_usd",
                           "GROUP BY time, unit ORDER BY time"),
     ["time", "unit", "cost_per_outcome_usd"]),
    ("Unit-cost policies (cost per outcome or session over its limit)", "table", "currencyUSD",
     "SELECT policy_id, scope_key, argMax(state, ts) AS state, argMax(observed, ts) AS cost_per_unit_usd, "
     "argMax(threshold, ts) AS max_usd, max(ts) AS since FROM tokenbrake.alerts FINAL "
     f"WHERE rule = 'unit_cost' AND $__timeFilter(ts) AND {TENANTS} GROUP BY policy_id, scope_key "
     "ORDER BY state = 'firing' DESC, since DESC",
     ["policy_id", "scope_key", "state", "cost_per_unit_usd", "max_usd", "since"]),
    ("Dead letters by reason", "timeseries", "short",
     f"SELECT $__timeInterval(ts) AS time, reason, sum(n) AS records FROM {HEALTH} FINAL "
     "ARRAY JOIN mapKeys(dead_letters) AS reason, mapValues(dead_letters) AS n "
     "WHERE $__timeFilter(ts) GROUP BY time, reason ORDER BY time",
     ["time", "reason", "records"]),
    ("Worker lag (messages past the committed offsets)", "timeseries", "short",
     f"SELECT $__timeInterval(ts) AS time, worker, max(lag_messages) AS lag_messages FROM {HEALTH} FINAL "
     "WHERE $__timeFilter(ts) GROUP BY time, worker ORDER BY time",
     ["time", "worker", "lag_messages"]),
    ("Sink buffer (rows waiting for ClickHouse)", "timeseries", "short",
     f"SELECT $__timeInterval(ts) AS time, worker, max(buffered_rows) AS buffered_rows, "
     f"max(oldest_buffered_s) AS oldest_buffered_s FROM {HEALTH} FINAL WHERE $__timeFilter(ts) "
     "GROUP BY time, worker ORDER BY time",
     ["time", "worker", "buffered_rows", "oldest_buffered_s"]),
]


def _variable(name: str, column: str) -> dict[str, Any]:
    where = "" if name == "tenant" else f" AND {TENANTS}"
    return {"name": name, "label": name, "type": "query", "datasource": DS, "multi": True, "includeAll": True,
            "query": f"SELECT DISTINCT {column} FROM tokenbrake.usage_daily WHERE day >= today() - 35{where} "
                     f"ORDER BY {column}",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "refresh": 2}


def dashboard() -> dict[str, Any]:
    panels = []
    for i, (title, kind, unit, sql, _) in enumerate(PANELS):
        panels.append({"id": i + 1, "title": title, "type": kind, "datasource": DS,
                       "gridPos": {"x": 12 * (i % 2), "y": 8 * (i // 2), "w": 12, "h": 8},
                       "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                       "targets": [{"refId": "A", "datasource": DS, "editorType": "sql",
                                    "queryType": "time series" if kind == "timeseries" else "table",
                                    "format": 0 if kind == "timeseries" else 1, "rawSql": sql}]})
    return {"uid": "tokenbrake-enforcement", "title": "tokenbrake: Enforcement", "schemaVersion": 39, "version": 1,
            "editable": True, "time": {"from": "now-7d", "to": "now"}, "refresh": "1m",
            "tags": ["tokenbrake", "enforcement", "finops"],
            "templating": {"list": [_variable("tenant", "tenant_id"), _variable("feature", "feature_id"),
                                    _variable("model", "model"), _variable("environment", "environment")]},
            "panels": panels}


#: (uid, title, SQL returning one value per tenant or one row, threshold type, threshold, no-data state, for)
RULES = [
    ("tb-daily-spend-spike", "Daily spend over 2x the trailing 7-day average",
     "SELECT tenant_id, toFloat64(sumIf(cost_usd, day = today())) / "
     "greatest(toFloat64(sumIf(cost_usd, day >= today() - 7 AND day < today())) / 7, 1e-9) AS ratio "
     "FROM tokenbrake.usage_daily FINAL WHERE day >= today() - 7 GROUP BY tenant_id",
     "gt", 2, "OK", "0m"),
    ("tb-monthly-budget-80", "Monthly budget over 80%",
     "SELECT concat(policy_id, ' ', tenant_id, if(scope_value = '', '', concat('/', scope_value))) AS budget, used "
     f"FROM ({BUDGET_UTILISATION}) WHERE period = 'month'",
     "gt", 0.8, "OK", "0m"),
    ("tb-pipeline-heartbeat", "No usage event stored for 10 minutes",
     "SELECT count() AS events FROM tokenbrake.usage_events WHERE ingested_at >= now() - INTERVAL 10 MINUTE",
     "lt", 1, "Alerting", "5m"),
    # quiet while no worker has ever stored a health row (TOKENBRAKE_PIPELINE_HEALTH_INTERVAL_S=0,
    # or no worker started yet: the pipeline heartbeat covers that); fires once rows stop coming
    ("tb-worker-heartbeat", "No worker health row for 5 minutes",
     f"SELECT count() = 0 OR max(ts) >= now() - INTERVAL 5 MINUTE AS fresh_or_off FROM {HEALTH}",
     "lt", 1, "Alerting", "5m"),
]


def rules() -> dict[str, Any]:
    out = []
    for uid, title, sql, op, threshold, no_data, for_ in RULES:
        out.append({
            "uid": uid, "title": title, "condition": "C", "for": for_, "noDataState": no_data,
            "execErrState": "Error", "labels": {"team": "finops"}, "annotations": {"summary": title},
            "data": [
                {"refId": "A", "relativeTimeRange": {"from": 8 * 86_400, "to": 0}, "datasourceUid": DS["uid"],
                 "model": {"refId": "A", "editorType": "sql", "format": 1, "queryType": "table", "rawSql": sql}},
                {"refId": "B", "datasourceUid": "__expr__",
                 "model": {"refId": "B", "type": "reduce", "expression": "A", "reducer": "last"}},
                {"refId": "C", "datasourceUid": "__expr__",
                 "model": {"refId": "C", "type": "threshold", "expression": "B",
                           "conditions": [{"evaluator": {"type": op, "params": [threshold]}}]}},
            ]})
    return {"apiVersion": 1, "groups": [{"orgId": 1, "name": "tokenbrake", "folder": "tokenbrake", "interval": "1m",
                                         "rules": out}]}


def render() -> dict[Path, str]:
    return {DASHBOARD_PATH: json.dumps(dashboard(), indent=2) + "\n",
            RULES_PATH: "# generated by python -m tokenbrake.streams.finops.grafana_enforcement\n"
                        + yaml.safe_dump(rules(), sort_keys=False, width=120)}


def main() -> None:
    for path, text in render().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
