"""Controls issued by hand (``tokenbrake control ...``), signed like the worker's."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

from aiokafka import AIOKafkaProducer
from rich.console import Console

from tokenbrake.clients.killswitch import KillSwitch
from tokenbrake.schemas.codec import dumps
from tokenbrake.schemas.control import ControlEvent, Reason, Scope
from tokenbrake.schemas.sequence import ControlSigner
from tokenbrake.streams.aggregate.periods import parse_ttl_seconds
from tokenbrake.streams.settings import Settings
from tokenbrake.streams.tables import controls_tables


def build_control(action: str, tenant: str, feature: str | None, user: str | None, model: str | None,
                  max_rps: float | None, to_model: str | None, ttl: str | None, reason: str) -> ControlEvent:
    if action == "throttle" and not max_rps:
        raise ValueError("throttle needs --max-rps")
    if action == "downgrade" and not to_model:
        raise ValueError("downgrade needs --to-model")
    now_ms = time.time_ns() // 1_000_000
    expires = now_ms + parse_ttl_seconds(ttl) * 1000 if ttl else None
    return ControlEvent(
        control_id=uuid.uuid4().hex, issued_at=now_ms,
        scope=Scope(tenant_id=tenant, feature_id=feature, user_id=user, model=model), action=action,
        max_rps=max_rps if action == "throttle" else None, downgrade_to=to_model if action == "downgrade" else None,
        reason=Reason(rule="operator", observed=Decimal(0), threshold=Decimal(0), period=ttl or "until allow",
                      detail=reason),
        expires_at=expires, issued_by="operator")


async def publish_control(settings: Settings, bootstrap: str, control: ControlEvent) -> ControlEvent:
    """Sign with the next sequence for the scope: the control topic is read first, so the
    sequence follows the highest one on it (schemas.sequence) with no state kept here."""
    view = KillSwitch(bootstrap, settings.topic_control, **settings.control_view_kwargs())
    await view.start()
    try:
        signed = ControlSigner(*settings.signing_key, last_seen=view.last_seq).issue(control)
    finally:
        await view.stop()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **settings.kafka_kwargs())
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_control, dumps(signed), key=control.scope.key().encode())
    finally:
        await producer.stop()
    return signed


async def list_controls(settings: Settings, bootstrap: str) -> dict[str, ControlEvent]:
    ks = KillSwitch(bootstrap, settings.topic_control, **settings.control_view_kwargs())
    await ks.start()
    try:
        return {**ks.overrides(), **ks.controls()}
    finally:
        await ks.stop()


def control_rows(controls: dict[str, ControlEvent]) -> list[dict[str, object]]:
    """One JSON-ready row per scope (``control list --json``; the table reads the same rows)."""
    rows = []
    for key, c in sorted(controls.items()):
        rows.append({"scope": key, "action": c.action, "downgrade_to": c.downgrade_to, "max_rps": c.max_rps,
                     "rule": c.reason.rule, "reason": c.reason.detail or c.reason.period,
                     "issued_at": c.issued_at.isoformat(timespec="seconds"),
                     "expires_at": c.expires_at.isoformat(timespec="seconds") if c.expires_at else None,
                     "issued_by": c.issued_by, "control_id": c.control_id})
    return rows


def print_controls(controls: dict[str, ControlEvent], console: Console | None = None) -> None:
    console = console or Console()
    tables = controls_tables(control_rows(controls), full=True)
    console.print("current controls and allow overrides (compacted control topic)")
    for table in tables:
        console.print(table)
    if not tables:
        console.print("none")


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)
