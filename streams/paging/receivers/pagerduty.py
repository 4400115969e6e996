"""PagerDuty Events API v2: ``POST /v2/enqueue``, 202 when accepted.

The ``dedup_key`` is the incident's (a hash of rule, policy and scope): PagerDuty folds a
repeated trigger into the open alert and closes it on ``resolve`` with the same key.
"""

from __future__ import annotations

from typing import Any

from tokenbrake.schemas.codec import dumps
from tokenbrake.streams.paging.receivers import Notice, Request, iso
from tokenbrake.streams.paging.routes import Secrets

#: PagerDuty's severities; tokenbrake has no "error"
SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}


def payload(notice: Notice, routing_key: str) -> dict[str, Any]:
    if notice.action == "resolve":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": notice.dedup_key}
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": notice.dedup_key,
        "payload": {
            "summary": (("[test] " if notice.test else "") + notice.summary)[:1024],
            "source": f"tokenbrake:{notice.scope_key}",
            "severity": SEVERITY.get(notice.severity, "warning"),
            "timestamp": iso(notice.opened_ms),
            "component": notice.tenant,
            "group": notice.scope.get("feature_id") or "all-features",
            "class": notice.rule,
            "custom_details": {"observed": notice.observed, "threshold": notice.threshold, "rule": notice.rule,
                               "policy": notice.policy_id, "scope": notice.scope_key, "flaps": notice.flaps},
        },
        "links": [{"href": notice.dashboard_url, "text": f"Spend dashboard for {notice.tenant}"}],
        "client": "tokenbrake",
        "client_url": notice.dashboard_url,
    }


def build(notice: Notice, secrets: Secrets) -> Request:
    body = dumps(payload(notice, secrets.get("routing_key")))
    return Request(secrets.get("url"), body, {"Content-Type": "application/json"})
