"""Each receiver's payload against an example recorded from the receiver's public documentation
(tests/unit/receiver_docs/): same field names, same JSON types, the receiver's own rules."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from tokenbrake.schemas.codec import loads
from tokenbrake.streams.paging.receivers import Notice, alertmanager, pagerduty, slack, webhook
from tokenbrake.streams.paging.routes import Secrets

DOCS = Path(__file__).parent / "receiver_docs"
ROOT = Path(__file__).resolve().parents[2]


def documented(name: str) -> Any:
    doc = json.loads((DOCS / name).read_text())
    doc.pop("_source")
    return doc


def notice(action: str = "trigger", **kw: Any) -> Notice:
    base = dict(action=action, dedup_key="tb-0123456789abcdef0123", rule="budget", severity="critical",
                summary="tenant=acme/feature=chat/user=*/model=* at 104% of acme-daily ($52.00 of $50.00, day:x)",
                scope={"tenant_id": "acme", "feature_id": "chat", "user_id": None, "model": None},
                scope_key="tenant=acme/feature=chat/user=*/model=*", observed="52.000000000", threshold="50.00",
                policy_id="acme-daily", opened_ms=1_795_900_000_000, now_ms=1_795_900_600_000,
                dashboard_url="http://grafana:3000/d/tokenbrake-spend?var-tenant=acme")
    base.update(kw)
    return Notice(**base)


def same_shape(ours: Any, doc: Any, path: str = "$") -> list[str]:
    """Field names ours uses that the documented example does not, and JSON type mismatches.
    (Free-form maps such as PagerDuty's custom_details are compared by type only.)"""
    if isinstance(doc, dict):
        if not isinstance(ours, dict):
            return [f"{path}: object expected"]
        problems = []
        for key, value in ours.items():
            if key not in doc:
                problems.append(f"{path}.{key}: not a documented field")
            else:
                problems += same_shape(value, doc[key], f"{path}.{key}")
        return problems
    if isinstance(doc, list):
        if not isinstance(ours, list):
            return [f"{path}: array expected"]
        return [p for item in ours for p in same_shape(item, doc[0], f"{path}[]")] if doc else []
    if isinstance(doc, str) and not isinstance(ours, str):
        return [f"{path}: string expected, got {type(ours).__name__}"]
    return []


def test_pagerduty_trigger_matches_the_documented_event():
    doc = documented("pagerduty_trigger.json")
    ours = pagerduty.payload(notice(), "R0UTINGKEY")
    details, doc["payload"]["custom_details"] = ours["payload"].pop("custom_details"), {}
    assert same_shape(ours, doc) == []
    assert set(doc["payload"]) >= {"summary", "source", "severity"} <= set(ours["payload"])
    assert ours["event_action"] == "trigger" and ours["routing_key"] == "R0UTINGKEY"
    assert ours["payload"]["severity"] in ("critical", "error", "warning", "info")
    assert len(ours["payload"]["summary"]) <= 1024
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ours["payload"]["timestamp"])
    assert details == {"observed": "52.000000000", "threshold": "50.00", "rule": "budget", "policy": "acme-daily",
                       "scope": "tenant=acme/feature=chat/user=*/model=*", "flaps": 0}
    assert ours["links"] == [{"href": "http://grafana:3000/d/tokenbrake-spend?var-tenant=acme",
                              "text": "Spend dashboard for acme"}]


def test_pagerduty_summary_is_cut_at_1024_and_the_resolve_is_the_documented_three_fields():
    long = pagerduty.payload(notice(summary="x" * 5000), "k")
    assert len(long["payload"]["summary"]) == 1024
    ours = pagerduty.payload(notice("resolve"), "R0UTINGKEY")
    assert set(ours) == set(documented("pagerduty_resolve.json"))
    assert ours == {"routing_key": "R0UTINGKEY", "event_action": "resolve", "dedup_key": "tb-0123456789abcdef0123"}


def test_pagerduty_dedup_key_is_the_incident_not_its_values():
    a = pagerduty.payload(notice(observed="1"), "k")
    b = pagerduty.payload(notice(observed="99", summary="other"), "k")
    assert a["dedup_key"] == b["dedup_key"] == "tb-0123456789abcdef0123"


def test_slack_message_matches_the_documented_block_kit_message():
    doc = documented("slack_webhook.json")
    ours = slack.payload(notice())
    sections = [b for b in ours["blocks"] if b["type"] == "section"]
    context = [b for b in ours["blocks"] if b["type"] == "context"]
    assert len(sections) + len(context) == len(ours["blocks"])
    assert same_shape({"text": ours["text"], "blocks": sections[:1]},
                      {"text": doc["text"], "blocks": doc["blocks"][:1]}) == []
    assert same_shape(sections[1], doc["blocks"][1]) == []
    for block in context:  # Block Kit context block: elements are text objects like a section's text
        assert [set(e) for e in block["elements"]] == [set(doc["blocks"][0]["text"])] * len(block["elements"])
    assert ours["text"].startswith("CRITICAL: ")  # the notification fallback
    fields = " ".join(f["text"] for f in sections[1]["fields"])
    for what in ("*Tenant*\nacme", "*Feature*\nchat", "*Observed / threshold*\n52.000000000 / 50.00", "*Since*\n"):
        assert what in fields
    link = "<http://grafana:3000/d/tokenbrake-spend?var-tenant=acme|Spend dashboard>"
    assert link in context[0]["elements"][0]["text"]


def test_slack_resolve_is_a_new_message_naming_the_incident_it_closes():
    ours = slack.payload(notice("resolve"))
    assert ours["text"].startswith("Resolved: ")
    assert "tb-0123456789abcdef0123" in ours["text"] and "2026-11-28T" in ours["text"]  # which incident, since when


def test_slack_escapes_mrkdwn_control_characters():
    ours = slack.payload(notice(summary="a <b> & c", scope={"tenant_id": "<!channel>"}))
    assert "<!channel>" not in json.dumps(ours["blocks"])


def test_alertmanager_alerts_match_the_openapi_postable_alerts():
    doc = documented("alertmanager_postable_alerts.json")
    firing, resolved = alertmanager.payload(notice()), alertmanager.payload(notice("resolve"))
    for ours in (firing, resolved):  # labelSet is a map of strings: its keys are ours to choose
        assert same_shape([{**a, "labels": {}, "annotations": {}} for a in ours], doc["body"]) == []
        assert all(set(doc["required"]) <= set(a) for a in ours)
        assert all(isinstance(v, str) for a in ours for v in (*a["labels"].values(), *a["annotations"].values()))
    labels = firing[0]["labels"]
    assert labels == {"alertname": "tokenbrake_budget", "rule": "budget", "tenant": "acme", "feature": "chat",
                      "severity": "critical", "incident": "tb-0123456789abcdef0123", "policy": "acme-daily"}
    assert not any(re.search(r"\d{4}-\d\d|52\.0|50\.00", v) for v in labels.values())  # no amounts, no times
    assert firing[0]["annotations"]["observed"] == "52.000000000"
    assert "endsAt" not in firing[0] and resolved[0]["endsAt"] == "2026-11-28T21:16:40.000Z"
    assert firing[0]["startsAt"] == resolved[0]["startsAt"] == "2026-11-28T21:06:40.000Z"
    assert resolved[0]["labels"] == labels  # the same alert for Alertmanager: it ends the one that fired


def readme_verifier() -> Any:
    """The README's "verify the webhook signature" snippet, run as written."""
    text = (ROOT / "README.md").read_text()
    code = re.search(r"<!-- webhook-verify -->\s*```python\n(.*?)```", text, re.S)
    assert code, "README has no webhook verification snippet"
    assert len(code.group(1).strip().splitlines()) <= 10
    scope: dict[str, Any] = {}
    exec(compile(code.group(1), "README.md", "exec"), scope)  # noqa: S102 - our own README
    return scope["verify"]


def test_webhook_is_signed_over_timestamp_and_body_and_the_readme_verifies_it():
    secrets = Secrets({"url": SecretStr("http://127.0.0.1:9/hook"), "secret": SecretStr("s3cret")})
    request = webhook.build(notice(), secrets)
    ts, sig = request.headers["X-Tokenbrake-Timestamp"], request.headers["X-Tokenbrake-Signature"]
    assert ts == "1795900600"
    expected = hmac.new(b"s3cret", ts.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert sig == "v1=" + expected
    body = loads(request.body)
    assert body["state"] == "firing" and body["incident"] == "tb-0123456789abcdef0123"
    verify = readme_verifier()
    headers = dict(request.headers)
    assert verify(b"s3cret", headers, request.body, now=1_795_900_660) is True
    assert verify(b"wrong", headers, request.body, now=1_795_900_660) is False  # forged
    assert verify(b"s3cret", headers, request.body + b" ", now=1_795_900_660) is False  # altered
    assert verify(b"s3cret", headers, request.body, now=1_795_900_600 + 301) is False  # replayed later
    assert webhook.build(notice("resolve"), secrets).headers["X-Tokenbrake-Delivery"] != \
        request.headers["X-Tokenbrake-Delivery"]
    assert "s3cret" not in repr(secrets) and "127.0.0.1" not in repr(request)
