"""Cost per business outcome: outcomes stored in ClickHouse, and the calls attributed to them.

Attribution rule, per tenant, feature and UTC day of the outcome:

1. **Linked calls.** A usage event is linked to an outcome when its ``logical_call_id`` is
   in the outcome's ``logical_call_ids`` or its ``session_id`` is the outcome's
   ``session_id`` (same tenant). A call may precede its outcome: events up to
   :data:`LINK_LOOKBACK_DAYS` before the window are looked at. An event linked to several
   outcomes is shared equally among them (no call is counted twice).
2. **Unlinked calls.** The cost of a tenant x feature x day's events linked to no outcome is
   shared equally among that tenant x feature x day's outcomes (of every kind): the feature
   exists to produce them. A tenant x feature x day with unlinked spend and no outcome is
   reported as ``unattributed``.

Shares are computed with 18 decimals (a division by 3 is truncated there, far below a
nano-dollar); everything else is exact. Per tenant, feature, kind and day: outcomes, cost
attributed, cost per outcome, outcomes per dollar, value and margin (value minus cost, over
the outcomes that carry a value).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tokenbrake.schemas.outcome import OutcomeEvent

LINK_LOOKBACK_DAYS = 7
OUTCOME_COLUMNS = ["outcome_id", "ts", "tenant_id", "feature_id", "user_id", "kind", "value", "quality",
                   "logical_call_ids", "session_id", "ingested_at"]


def outcome_row(o: OutcomeEvent, ingested_at: datetime) -> list:
    return [o.outcome_id, o.ts, o.tenant_id, o.feature_id, o.user_id, o.kind, o.value, o.quality,
            list(o.logical_call_ids), o.session_id, ingested_at]


def write_outcomes(client: Any, db: str, outcomes: list[OutcomeEvent]) -> int:
    """Store outcomes (idempotent by outcome_id: the latest write wins)."""
    now = datetime.now(UTC)
    if outcomes:
        client.insert(f"{db}.outcomes", [outcome_row(o, now) for o in outcomes], column_names=OUTCOME_COLUMNS)
    return len(outcomes)


_SQL = """
WITH
    o AS (SELECT outcome_id, toDate(ts) AS day, tenant_id, feature_id, kind, value, logical_call_ids, session_id
          FROM {db}.outcomes FINAL
          WHERE ts >= toDateTime(%(lo)s, 'UTC') AND ts < toDateTime(%(hi)s, 'UTC')
            AND (%(tenant)s = '' OR tenant_id = %(tenant)s)),
    ev AS (SELECT event_id, tenant_id, toString(feature_id) AS feature_id, toDate(ts) AS day, logical_call_id,
                  session_id, toDecimal128(cost_usd, 18) AS cost
           FROM {db}.usage_events FINAL
           WHERE ts >= toDateTime(%(lo)s, 'UTC') - INTERVAL {lookback} DAY AND ts < toDateTime(%(hi)s, 'UTC')
             AND (%(tenant)s = '' OR tenant_id = %(tenant)s)),
    links AS (SELECT DISTINCT event_id, outcome_id FROM (
                SELECT ev.event_id AS event_id, l.outcome_id AS outcome_id FROM ev
                INNER JOIN (SELECT outcome_id, tenant_id, arrayJoin(logical_call_ids) AS call_id FROM o) AS l
                    ON ev.tenant_id = l.tenant_id AND ev.logical_call_id = l.call_id
                UNION ALL
                SELECT ev.event_id, s.outcome_id FROM ev
                INNER JOIN (SELECT outcome_id, tenant_id, assumeNotNull(session_id) AS sid FROM o
                            WHERE session_id IS NOT NULL) AS s
                    ON ev.tenant_id = s.tenant_id AND ev.session_id = s.sid)),
    shares AS (SELECT event_id, count() AS n FROM links GROUP BY event_id),
    linked AS (SELECT links.outcome_id AS outcome_id, sum(ev.cost / toDecimal128(shares.n, 0)) AS cost
               FROM links INNER JOIN shares ON shares.event_id = links.event_id
               INNER JOIN ev ON ev.event_id = links.event_id GROUP BY outcome_id),
    unlinked AS (SELECT tenant_id, feature_id, day, sum(cost) AS cost FROM ev
                 WHERE day >= toDate(%(lo)s) AND event_id NOT IN (SELECT event_id FROM links)
                 GROUP BY tenant_id, feature_id, day),
    per_day AS (SELECT tenant_id, feature_id, day, count() AS n FROM o GROUP BY tenant_id, feature_id, day),
    attributed AS (
        SELECT o.day AS day, o.tenant_id AS tenant_id, o.feature_id AS feature_id, o.kind AS kind, o.value AS value,
               ifNull(linked.cost, toDecimal128(0, 18))
               + ifNull(unlinked.cost, toDecimal128(0, 18)) / toDecimal128(per_day.n, 0) AS cost
        FROM o
        LEFT JOIN linked ON linked.outcome_id = o.outcome_id
        LEFT JOIN unlinked ON unlinked.tenant_id = o.tenant_id AND unlinked.feature_id = o.feature_id
                          AND unlinked.day = o.day
        INNER JOIN per_day ON per_day.tenant_id = o.tenant_id AND per_day.feature_id = o.feature_id
                          AND per_day.day = o.day)
SELECT day, tenant_id, feature_id, kind, count() AS outcomes, sum(cost) AS cost_usd,
       cost_usd / toDecimal128(outcomes, 0) AS cost_per_outcome_usd,
       if(cost_usd > 0, toDecimal128(outcomes, 18) / cost_usd, NULL) AS outcomes_per_usd,
       countIf(value IS NOT NULL) AS valued_outcomes, sumIf(toDecimal128(value, 18), value IS NOT NULL) AS value_usd,
       value_usd - sumIf(cost, value IS NOT NULL) AS margin_usd
FROM attributed GROUP BY day, tenant_id, feature_id, kind ORDER BY day, tenant_id, feature_id, kind
"""

_UNATTRIBUTED = """
SELECT toDate(ts) AS day, tenant_id, toString(feature_id) AS feature_id, sum(cost_usd) AS cost_usd
FROM {db}.usage_events FINAL
WHERE ts >= toDateTime(%(lo)s, 'UTC') AND ts < toDateTime(%(hi)s, 'UTC') AND (%(tenant)s = '' OR tenant_id = %(tenant)s)
  AND (tenant_id, toString(feature_id), toDate(ts)) NOT IN (
      SELECT tenant_id, toString(feature_id), toDate(ts) FROM {db}.outcomes FINAL
      WHERE ts >= toDateTime(%(lo)s, 'UTC') AND ts < toDateTime(%(hi)s, 'UTC'))
GROUP BY day, tenant_id, feature_id ORDER BY day, tenant_id, feature_id
"""


def cost_per_outcome_columns() -> list[str]:
    return ["day", "tenant_id", "feature_id", "kind", "outcomes", "cost_usd", "cost_per_outcome_usd",
            "outcomes_per_usd", "valued_outcomes", "value_usd", "margin_usd"]


def cost_per_outcome_sql(db: str) -> str:
    return _SQL.format(db=db, lookback=LINK_LOOKBACK_DAYS)


def _params(start: datetime, end: datetime, tenant: str) -> dict[str, Any]:
    return {"lo": start.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds"),
            "hi": end.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds"), "tenant": tenant}


def cost_per_outcome(client: Any, db: str, start: datetime, end: datetime, tenant: str = "") -> list[dict]:
    """One dict per day, tenant, feature and kind (see the module docstring); money as Decimal."""
    result = client.query(cost_per_outcome_sql(db), parameters=_params(start, end, tenant))
    return [{k: (Decimal(v) if isinstance(v, Decimal) else v) for k, v in row.items()}
            for row in result.named_results()]


def unattributed(client: Any, db: str, start: datetime, end: datetime, tenant: str = "") -> list[tuple]:
    """Spend of tenant x feature x days that had no outcome at all."""
    return client.query(_UNATTRIBUTED.format(db=db), parameters=_params(start, end, tenant)).result_rows
