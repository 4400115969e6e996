"""Slack incoming webhook: ``text`` (the notification fallback) plus Block Kit ``blocks``.

A webhook cannot edit a message it posted, so a resolution is a new message that names the
incident it closes (its key and when it opened). Slack answers 200 ``ok``.
"""

from __future__ import annotations

from typing import Any

from tokenbrake.schemas.codec import dumps
from tokenbrake.streams.paging.receivers import Notice, Request, iso
from tokenbrake.streams.paging.routes import Secrets

EMOJI = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}


def _escape(text: str) -> str:
    """Slack mrkdwn control characters (``&``, ``<``, ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(notice: Notice) -> dict[str, Any]:
    test = "[test] " if notice.test else ""
    if notice.action == "resolve":
        text = f"{test}Resolved: {notice.summary} (incident {notice.dedup_key}, open since {iso(notice.opened_ms)})"
        headline = f":white_check_mark: *{test}Resolved* {_escape(notice.rule)} on `{_escape(notice.scope_key)}`"
    else:
        text = f"{test}{notice.severity.upper()}: {notice.summary}"
        headline = f"{EMOJI.get(notice.severity, '')} *{test}{notice.severity.upper()}* {_escape(notice.summary)}"
    scope = notice.scope
    fields = [
        {"type": "mrkdwn", "text": f"*Tenant*\n{_escape(notice.tenant)}"},
        {"type": "mrkdwn", "text": f"*Feature*\n{_escape(scope.get('feature_id') or 'all')}"},
        {"type": "mrkdwn", "text": f"*Model*\n{_escape(scope.get('model') or 'all')}"},
        {"type": "mrkdwn", "text": f"*Observed / threshold*\n{notice.observed} / {notice.threshold}"},
        {"type": "mrkdwn", "text": f"*Since*\n{iso(notice.opened_ms)}"},
        {"type": "mrkdwn", "text": f"*Incident*\n{notice.dedup_key}"},
    ]
    return {
        "text": text[:3000],
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": headline[:3000]}},
            {"type": "section", "fields": fields},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": f"<{notice.dashboard_url}|Spend dashboard> · rule {_escape(notice.rule)}"
                                           + (f" · policy {_escape(notice.policy_id)}" if notice.policy_id else "")}]},
        ],
    }


def build(notice: Notice, secrets: Secrets) -> Request:
    return Request(secrets.get("url"), dumps(payload(notice)), {"Content-Type": "application/json"})
