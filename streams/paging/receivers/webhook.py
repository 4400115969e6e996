"""Generic webhook: one JSON object per incident state change, signed.

Headers: ``X-Tokenbrake-Timestamp`` (unix seconds), ``X-Tokenbrake-Signature``
(``v1=`` + hex HMAC-SHA256 of ``timestamp + "." + body`` with the route's secret) and
``X-Tokenbrake-Delivery`` (the same for every retry of one state change: receivers drop
repeats). A receiver rejects a bad signature (forgery) and a timestamp more than 5 minutes
away from its clock (replay); see the README for the 10 lines of Python.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from tokenbrake.schemas.codec import dumps
from tokenbrake.streams.paging.receivers import Notice, Request, iso
from tokenbrake.streams.paging.routes import Secrets


def payload(notice: Notice) -> dict[str, Any]:
    return {"version": 1, "state": "firing" if notice.action == "trigger" else "resolved",
            "incident": notice.dedup_key, "rule": notice.rule, "severity": notice.severity, "summary": notice.summary,
            "scope": notice.scope, "observed": notice.observed, "threshold": notice.threshold,
            "policy_id": notice.policy_id, "since": iso(notice.opened_ms), "at": iso(notice.now_ms),
            "flaps": notice.flaps, "dashboard_url": notice.dashboard_url, "test": notice.test}


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``v1=`` + hex HMAC-SHA256 over ``timestamp.body``.

    >>> signature(b"s3cret", "1700000000", b'{"a":1}')
    'v1=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940'
    """
    return "v1=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def build(notice: Notice, secrets: Secrets) -> Request:
    body = dumps(payload(notice))
    timestamp = str(notice.now_ms // 1000)
    delivery = hashlib.blake2b(f"{notice.dedup_key}|{notice.action}|{notice.opened_ms}".encode(),
                               digest_size=12).hexdigest()
    return Request(secrets.get("url"), body, {
        "Content-Type": "application/json", "X-Tokenbrake-Timestamp": timestamp,
        "X-Tokenbrake-Signature": signature(secrets.get("secret").encode(), timestamp, body),
        "X-Tokenbrake-Delivery": delivery})
