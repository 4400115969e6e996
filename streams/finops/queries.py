"""The tables finance asks for, as SQL over the rollups and the audit trail.

Each query takes ``lo`` and ``hi`` (dates, ``hi`` exclusive) and optionally ``tenant``
('' = every tenant); the CSV export and the report read the same SQL.
"""

from __future__ import annotations

from datetime import date
from typing import Any

CSV_QUERIES = {
    # spend per day and every rollup dimension: requests, tokens, cost, money lost
    "spend": """
SELECT day, tenant_id, tenant_tier, feature_id, provider, model, environment, region, prompt_version,
       sum(requests) AS requests, sum(errors) AS errors, sum(retries) AS retries,
       sum(semantic_cache_hits) AS semantic_cache_hits, sum(input_tokens) AS input_tokens,
       sum(cached_input_tokens) AS cached_input_tokens, sum(output_tokens) AS output_tokens,
       sum(cost_usd) AS cost_usd, sum(failed_cost_usd) AS failed_cost_usd, sum(retry_cost_usd) AS retry_cost_usd
FROM {db}.usage_daily FINAL
WHERE day >= %(lo)s AND day < %(hi)s AND (%(tenant)s = '' OR tenant_id = %(tenant)s)
GROUP BY day, tenant_id, tenant_tier, feature_id, provider, model, environment, region, prompt_version
ORDER BY day, tenant_id, feature_id, model, environment, region, prompt_version""",
    # spend per user (hashed ids, as reported) and day, from the events themselves
    "users": """
SELECT toDate(ts) AS day, tenant_id, user_id, count() AS requests, countIf(status != 'ok') AS errors,
       countIf(attempt > 0) AS retries, sum(cost_usd) AS cost_usd
FROM {db}.usage_events FINAL
WHERE ts >= %(lo)s AND ts < %(hi)s AND (%(tenant)s = '' OR tenant_id = %(tenant)s)
GROUP BY day, tenant_id, user_id ORDER BY day, tenant_id, cost_usd DESC, user_id""",
    # the audit trail of controls: issued by the worker's rules and by operators
    "controls": """
SELECT issued_at, control_id, issued_by, action, scope_key, tenant_id, feature_id, user_id, model, max_rps,
       downgrade_to, rule, observed, threshold, period, policy_id, expires_at, detail
FROM {db}.control_events FINAL
WHERE issued_at >= %(lo)s AND issued_at < %(hi)s AND (%(tenant)s = '' OR tenant_id = %(tenant)s)
ORDER BY issued_at, control_id""",
    # every alert state change (firing, resolved)
    "alerts": """
SELECT ts, alert_id, rule, severity, state, scope_key, tenant_id, feature_id, user_id, model, summary, observed,
       threshold, policy_id
FROM {db}.alerts FINAL
WHERE ts >= %(lo)s AND ts < %(hi)s AND (%(tenant)s = '' OR tenant_id = %(tenant)s)
ORDER BY ts, alert_id""",
}


def run_query(client: Any, db: str, name: str, lo: date, hi: date, tenant: str = "") -> tuple[list[str], list[dict]]:
    """(columns, rows as dicts) of one of :data:`CSV_QUERIES`."""
    sql, params = CSV_QUERIES[name].format(db=db), {"lo": lo, "hi": hi, "tenant": tenant}
    result = client.query(sql, parameters=params)
    columns = list(result.column_names)
    if not columns:  # chdb names no column of an empty result: the file still gets its header
        columns = [r[0] for r in client.query(f"DESCRIBE TABLE ({sql})", parameters=params).result_rows]
    return columns, list(result.named_results())
