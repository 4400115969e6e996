"""Incidents: the pure state machine between AlertEvents and pages. No clock, no I/O.

An incident is one (rule, policy, scope) *series* while it fires:

    (none) --firing--> open --resolved--> resolving --flap window passes--> resolved
                        ^                     |
                        +-------firing--------+   (a flap: the same incident, nobody paged again)

``resolving`` holds the resolve back for the flap window (Prometheus calls it
``keep_firing_for``): an alert that resolves and fires again within it re-opens the same
incident instead of paging anew, and nobody gets a resolve/trigger ping-pong.

Per route the incident records what the receiver has acknowledged (``sent``) and what was
given up on (``dead``, dead-lettered). What a route still needs is *derived* from the state
(:func:`pending`), never queued on the side: a restarted pager reads the incidents back from
their compacted topic and delivers exactly what is missing. So a redelivered alert or a
restart never re-pages (the route already has ``sent == trigger``) and never forgets to
resolve (a resolved incident whose route has ``sent == trigger`` still needs its resolve).
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict

from tokenbrake.schemas.control import AlertEvent
from tokenbrake.streams.paging.routes import SEVERITIES, Route

State = Literal["open", "resolving", "resolved"]
Action = Literal["trigger", "resolve"]
RECENT_IDS = 16  # alert ids remembered per incident: a redelivered alert changes nothing
KEEP_RESOLVED_MS = 24 * 3_600_000  # resolved incidents are kept this long (redelivery guard), then deleted
#: a firing alert this old opens no incident: history read by a pager's first start, not news
STALE_MS = KEEP_RESOLVED_MS
#: Alertmanager forgets an alert not re-posted within resolve_timeout (5 min default)
AM_REPOST_MS = 60_000
AM_RESOLVED_FOR_MS = 5 * 60_000


class RouteDelivery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sent: Literal["none", "trigger", "resolve"] = "none"  # the last state the receiver acknowledged
    dead: Action | None = None  # an action given up on (dead-lettered): not tried again
    attempts: int = 0
    last_error: str | None = None
    last_sent_ms: int = 0


class Incident(BaseModel):
    """The persisted record (value of the compacted incidents topic, key = ``series``)."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    series: str
    dedup_key: str
    rule: str
    policy_id: str | None = None
    scope: dict[str, str | None]
    scope_key: str
    tenant_tier: str | None = None
    severity: Literal["info", "warning", "critical"]
    summary: str
    observed: str
    threshold: str
    state: State = "open"
    opened_ms: int
    resolving_ms: int | None = None
    resolved_ms: int | None = None
    flaps: int = 0
    last_ts_ms: int = 0
    recent_ids: list[str] = []
    routes: dict[str, RouteDelivery] = {}


def series_of(alert: AlertEvent) -> str:
    """The incident identity: rule, policy and scope (not values, not times)."""
    return f"{alert.rule}|{alert.policy_id or '-'}|{alert.scope.key()}"


def dedup_key_of(series: str) -> str:
    """Stable key receivers deduplicate on (PagerDuty ``dedup_key``, webhook ``incident``).

    >>> dedup_key_of("budget|acme-daily|tenant=acme/feature=*/user=*/model=*")
    'tb-2b148b540cb1d5a6a656'
    """
    return "tb-" + hashlib.blake2b(series.encode(), digest_size=10).hexdigest()


def _matching(routes: list[Route], inc: Incident) -> list[str]:
    tenant, feature = inc.scope.get("tenant_id") or "", inc.scope.get("feature_id")
    return [r.id for r in routes if r.match.matches(inc.rule, inc.severity, tenant, feature, inc.tenant_tier)]


def _ts_ms(alert: AlertEvent) -> int:
    return int(alert.ts.timestamp() * 1000)


def apply_alert(incident: Incident | None, alert: AlertEvent, routes: list[Route], now_ms: int) -> Incident | None:
    """The incident after ``alert``, or ``None`` when the alert changes nothing (a redelivery,
    a repeat, a resolve of nothing). ``incident`` is not modified."""
    ts = _ts_ms(alert)
    if incident is not None and (alert.alert_id in incident.recent_ids or ts < incident.last_ts_ms):
        return None  # already applied, or older than what was: a redelivered or replayed alert
    if alert.state == "resolved":
        if incident is None or incident.state != "open":
            return None
        inc = incident.model_copy(deep=True)
        inc.state, inc.resolving_ms = "resolving", now_ms
    elif incident is None or incident.state == "resolved":  # past the flap window: a new incident
        if now_ms - ts > STALE_MS:
            return None
        inc = Incident(series=series_of(alert), dedup_key=dedup_key_of(series_of(alert)), rule=alert.rule,
                       policy_id=alert.policy_id, scope=alert.scope.model_dump(mode="json"),
                       scope_key=alert.scope.key(), tenant_tier=alert.tenant_tier, severity=alert.severity,
                       summary=alert.summary, observed=str(alert.observed), threshold=str(alert.threshold),
                       opened_ms=now_ms)
    else:
        inc = incident.model_copy(deep=True)
        if inc.state == "resolving":  # fired again within the flap window: the same incident
            inc.flaps += 1
            inc.state, inc.resolving_ms = "open", None
        if SEVERITIES.index(alert.severity) >= SEVERITIES.index(inc.severity):
            inc.severity = alert.severity  # escalation (a budget's 80% warning, then its 100%)
            inc.summary, inc.observed, inc.threshold = alert.summary, str(alert.observed), str(alert.threshold)
        inc.tenant_tier = inc.tenant_tier or alert.tenant_tier
    inc.last_ts_ms = max(inc.last_ts_ms, ts)
    inc.recent_ids = [*inc.recent_ids, alert.alert_id][-RECENT_IDS:]
    if inc.state == "open":
        for route_id in _matching(routes, inc):
            inc.routes.setdefault(route_id, RouteDelivery())
    return inc


def advance(incident: Incident, now_ms: int, flap_ms: int) -> Incident | None:
    """A resolving incident becomes resolved once the flap window has passed; ``None`` when
    nothing changes."""
    if incident.state == "resolving" and incident.resolving_ms is not None \
            and now_ms - incident.resolving_ms >= flap_ms:
        inc = incident.model_copy(deep=True)
        inc.state, inc.resolved_ms = "resolved", now_ms
        return inc
    return None


def pending(incident: Incident, route: Route, now_ms: int) -> Action | None:
    """What ``route`` still needs for this incident, now (quiet hours hold a trigger back)."""
    d = incident.routes.get(route.id)
    if d is None:
        return None
    if incident.state == "resolved":
        return "resolve" if d.sent == "trigger" and d.dead != "resolve" else None
    if incident.state == "resolving" or d.sent == "trigger" or d.dead == "trigger":
        return None  # (a route not yet paged is not paged for an incident that has ended)
    if route.quiet_hours is not None and route.quiet_hours.holds(now_ms, incident.severity):
        return None
    return "trigger"


def repost_due(incident: Incident, route: Route, now_ms: int) -> Action | None:
    """Alertmanager forgets alerts not re-posted within its resolve_timeout: re-post a firing
    alert every minute, and a resolved one for five minutes after the resolve."""
    if route.kind != "alertmanager":
        return None
    d = incident.routes.get(route.id)
    if d is None or now_ms - d.last_sent_ms < AM_REPOST_MS:
        return None
    if d.sent == "trigger" and incident.state != "resolved":
        return "trigger"
    if d.sent == "resolve" and incident.resolved_ms is not None and now_ms - incident.resolved_ms < AM_RESOLVED_FOR_MS:
        return "resolve"
    return None


def delivered(incident: Incident, route_id: str, action: Action, now_ms: int, attempts: int) -> Incident:
    inc = incident.model_copy(deep=True)
    d = inc.routes.setdefault(route_id, RouteDelivery())
    d.sent, d.last_error, d.last_sent_ms, d.attempts = action, None, now_ms, d.attempts + attempts
    return inc


def failed(incident: Incident, route_id: str, action: Action | None, error: str, attempts: int) -> Incident:
    """A delivery that failed; with ``action`` it was dead-lettered and is not tried again."""
    inc = incident.model_copy(deep=True)
    d = inc.routes.setdefault(route_id, RouteDelivery())
    d.last_error, d.attempts = error, d.attempts + attempts
    if action is not None:
        d.dead = action
    return inc


def expired(incident: Incident, now_ms: int) -> bool:
    """A resolved incident old enough to be deleted (tombstoned on the topic)."""
    return incident.state == "resolved" and incident.resolved_ms is not None \
        and now_ms - incident.resolved_ms >= KEEP_RESOLVED_MS
