"""Receivers: one module per on-call tool, each a pure payload builder.

``build(notice, secrets) -> Request``: no I/O, no clock (the time is in the notice), so a
unit test compares the payload with the receiver's documented example. The delivery runner
(``streams.paging.delivery``) does the HTTP, and :func:`classify` says what an answer means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from tokenbrake.streams.paging.incidents import Incident
from tokenbrake.streams.paging.routes import Secrets


@dataclass(frozen=True, slots=True)
class Notice:
    """One state change of one incident, as every receiver is told it."""

    action: Literal["trigger", "resolve"]
    dedup_key: str
    rule: str
    severity: str
    summary: str
    scope: dict[str, str | None]
    scope_key: str
    observed: str
    threshold: str
    policy_id: str | None
    opened_ms: int
    now_ms: int
    dashboard_url: str
    flaps: int = 0
    test: bool = False

    @property
    def tenant(self) -> str:
        return self.scope.get("tenant_id") or "*"


@dataclass(frozen=True, slots=True)
class Request:
    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # the URL may carry a secret (a Slack webhook): never printed
        return f"Request(<url>, {len(self.body)} bytes)"


def iso(ms: int) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-11-29T21:40:00.000Z``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def dashboard_link(grafana_url: str, scope: dict[str, Any]) -> str:
    """The Grafana spend dashboard filtered to the alert's tenant."""
    tenant = scope.get("tenant_id") or "All"
    return f"{grafana_url.rstrip('/')}/d/tokenbrake-spend?var-tenant={quote(tenant, safe='')}"


def notice_of(incident: Incident, action: Literal["trigger", "resolve"], now_ms: int, grafana_url: str,
              test: bool = False) -> Notice:
    return Notice(action=action, dedup_key=incident.dedup_key, rule=incident.rule, severity=incident.severity,
                  summary=incident.summary, scope=incident.scope, scope_key=incident.scope_key,
                  observed=incident.observed, threshold=incident.threshold, policy_id=incident.policy_id,
                  opened_ms=incident.opened_ms, now_ms=now_ms,
                  dashboard_url=dashboard_link(grafana_url, incident.scope),
                  flaps=incident.flaps, test=test)


Verdict = Literal["ok", "retry", "permanent"]


def classify(status: int) -> Verdict:
    """2xx done; 408, 429 and 5xx worth retrying; any other 4xx will fail the same way again."""
    if 200 <= status < 300:
        return "ok"
    if status in (408, 429) or status >= 500:
        return "retry"
    return "permanent"


def builder(kind: str):  # noqa: ANN201 - the registry: one module per receiver kind
    from tokenbrake.streams.paging.receivers import alertmanager, pagerduty, slack, webhook

    return {"pagerduty": pagerduty.build, "slack": slack.build, "alertmanager": alertmanager.build,
            "webhook": webhook.build}[kind]


def build(kind: str, notice: Notice, secrets: Secrets) -> Request:
    return builder(kind)(notice, secrets)
