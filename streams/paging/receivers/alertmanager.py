"""Prometheus Alertmanager API v2: ``POST /api/v2/alerts`` with a list of postableAlerts.

Identity goes in labels (Alertmanager groups, routes and deduplicates on them), so they
never carry amounts or times; values are annotations. A firing alert has no ``endsAt`` and
is re-posted every minute (before Alertmanager's 5-minute ``resolve_timeout`` ends it); a
resolved one carries ``endsAt`` = the resolve time and is re-posted for 5 minutes.
"""

from __future__ import annotations

from typing import Any

from tokenbrake.schemas.codec import dumps
from tokenbrake.streams.paging.receivers import Notice, Request, iso
from tokenbrake.streams.paging.routes import Secrets


def alert(notice: Notice) -> dict[str, Any]:
    scope = notice.scope
    labels = {"alertname": "TokenbrakeTest" if notice.test else f"tokenbrake_{notice.rule}", "rule": notice.rule,
              "tenant": notice.tenant, "feature": scope.get("feature_id") or "", "model": scope.get("model") or "",
              "severity": notice.severity, "incident": notice.dedup_key}
    if notice.policy_id:
        labels["policy"] = notice.policy_id
    body: dict[str, Any] = {
        "labels": {k: v for k, v in labels.items() if v},
        "annotations": {"summary": notice.summary, "observed": notice.observed, "threshold": notice.threshold,
                        "scope": notice.scope_key},
        "startsAt": iso(notice.opened_ms),
        "generatorURL": notice.dashboard_url,
    }
    if notice.action == "resolve":
        body["endsAt"] = iso(notice.now_ms)
    return body


def payload(notice: Notice) -> list[dict[str, Any]]:
    return [alert(notice)]


def build(notice: Notice, secrets: Secrets) -> Request:
    base = secrets.get("url").rstrip("/")
    url = base if base.endswith("/api/v2/alerts") else f"{base}/api/v2/alerts"
    return Request(url, dumps(payload(notice)), {"Content-Type": "application/json"})
