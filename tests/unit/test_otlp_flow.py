"""The OTLP agent's batch step (streams.otlp_flow.forward_batch) without a broker: events go to
the usage topic per tenant on the tenant's partition, rejections to the dead-letter path, and
the exports are acknowledged only after the broker acknowledged every event."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from tests.otlp_spans import Service, chat, proto_bytes
from tests.unit.test_otlp_ingest import translator
from tokenbrake.schemas.codec import loads
from tokenbrake.streams.otlp_flow import forward_batch
from tokenbrake.streams.runtime.routing import TenantRouter


class Producer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.pending: list[asyncio.Future] = []

    async def send(self, topic: str, value: bytes, **kw: Any) -> asyncio.Future:
        self.sent.append({"topic": topic, "events": loads(value), **kw})
        fut = asyncio.get_running_loop().create_future()
        self.pending.append(fut)
        return fut


class Event:
    def __init__(self, value: bytes, timestamp: float = 1764000000.5) -> None:
        self.message = SimpleNamespace(value=value, headers=[], timestamp=timestamp, topic="otlp_spans",
                                       partition=0, offset=7, key=None)
        self.acked = False

    def ack(self) -> None:
        self.acked = True


def runtime(producer: Producer) -> Any:
    rt = SimpleNamespace(settings=SimpleNamespace(topic_usage="tokenbrake.usage"), router=TenantRouter(4),
                         app=SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer)),
                         dead=[])

    async def dead_letter(msg: Any, rejected: Any) -> None:
        rt.dead.append(rejected.reason)

    rt.dead_letter = dead_letter
    return rt


async def test_events_per_tenant_then_acks_after_delivery() -> None:
    a, b = Service("a", **{"tenant.id": "acme"}), Service("b", **{"tenant.id": "globex"})
    a.call(chat())
    a.call(chat())
    b.call(chat())
    nobody = Service("c")
    nobody.call(chat())
    producer = Producer()
    rt = runtime(producer)
    events = [Event(proto_bytes(a.spans() + b.spans() + nobody.spans())), Event(b"\x68\x01")]
    task = asyncio.create_task(forward_batch(rt, translator(), events))
    while len(producer.sent) < 2 or len(rt.dead) < 2:
        await asyncio.sleep(0)
    assert not any(e.acked for e in events)  # the broker has not acknowledged yet
    for fut in producer.pending:
        fut.set_result(None)
    await asyncio.wait_for(task, 5)
    assert all(e.acked for e in events)
    by_key = {s["key"]: s for s in producer.sent}
    assert len(by_key[b"acme"]["events"]) == 2 and len(by_key[b"globex"]["events"]) == 1
    assert by_key[b"acme"]["partition"] == rt.router.partition("acme")
    assert {s["timestamp_ms"] for s in producer.sent} == {1764000000500}
    assert {s["topic"] for s in producer.sent} == {"tokenbrake.usage"}
    assert sorted(rt.dead) == ["not_otlp", "unattributed"]


async def test_a_translator_bug_dead_letters_the_message_and_the_batch_goes_on() -> None:
    def broken(value: bytes, headers: Any) -> Any:
        raise KeyError("boom")

    producer = Producer()
    rt = runtime(producer)
    broken.counts = {"messages": 0}  # type: ignore[attr-defined]
    event = Event(b"{}")
    await forward_batch(rt, broken, [event])
    assert rt.dead == ["internal_error"] and event.acked and producer.sent == []
