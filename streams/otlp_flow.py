"""The OTLP input: the Collector's trace exports -> UsageEvents on the usage topic.

Off unless ``TOKENBRAKE_OTLP_ENABLED``. One more agent, on ``TOKENBRAKE_TOPIC_OTLP``
(``otlp_spans``, the Collector kafka exporter's default). Per batch of messages:
  1. each message is translated (:class:`streams.ingest.otlp_events.OtlpTranslator`):
     UsageEvents, and rejections;
  2. rejections go to the dead-letter topic with their reason (``runtime.dead_letter``, the
     usage path's own);
  3. the events go to the usage topic, one JSON array per tenant, keyed by tenant, on the
     tenant's partition (as ``Runtime._forward`` sends misrouted events), stamped with the
     OTLP message's timestamp (decision latency counts from the Collector's produce);
  4. once the broker has acknowledged every one of them, the OTLP messages are acknowledged.
There the very same engine and sink decide, store and acknowledge them like any service's.
A crash between 3 and 4 re-reads the messages: the same spans give the same event ids,
which the engine counts once (duplicates), as it does the Collector's own retries.

Why the events are sent on, not decided where the export landed: a tenant's state lives
with one usage partition, whose exactly-once positions are usage-topic offsets (an OTLP
offset in the same sequence would corrupt them); the Collector keys exports by trace, if at
all, and its topic's partition count is its own; and ClickHouse rows are built from the
message's JSON bytes. The cost is one more hop through the broker (milliseconds).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from tokenbrake.schemas.codec import dumps
from tokenbrake.streams.app import RawBytes
from tokenbrake.streams.faust_internals.changelog import aiokafka_producer
from tokenbrake.streams.ingest.decode import Rejected
from tokenbrake.streams.ingest.otlp_events import OtlpTranslator
from tokenbrake.streams.runtime.agents import run_input

log = logging.getLogger("tokenbrake.otlp")


def install_otlp(runtime: Any) -> OtlpTranslator | None:
    """Register the OTLP agent on the runtime's app when enabled; returns its translator
    (whose ``counts`` the metrics endpoint reads), else None."""
    settings = runtime.settings
    if not settings.otlp_enabled:
        return None
    translator = OtlpTranslator.from_settings(settings)
    topic = runtime.app.topic(settings.topic_otlp, schema=RawBytes())

    @runtime.app.agent(topic, name="otlp")
    async def otlp(stream: faust.StreamT) -> None:
        await run_input(runtime, stream, "otlp", lambda events: forward_batch(runtime, translator, events))

    log.info("OTLP input enabled", extra={"topic": settings.topic_otlp})
    return translator


async def forward_batch(runtime: Any, translator: OtlpTranslator, events: list[Any]) -> None:
    """Steps 1-4 of the module doc for one batch of the OTLP topic's messages."""
    producer = aiokafka_producer(runtime.app)
    usage_topic, route = runtime.settings.topic_usage, runtime.router.partition
    deliveries: list[asyncio.Future] = []
    for event in events:
        msg = event.message
        try:
            good, bad = translator(msg.value, msg.headers)
        except Exception as exc:  # a translator bug: this message, not the stream, pays for it
            good, bad = [], [Rejected("internal_error", f"OTLP translation failed: {type(exc).__name__}: {exc}",
                                      msg.value or b"")]
        for rejected in bad:
            await runtime.dead_letter(msg, rejected)
        by_tenant: dict[str, list[Any]] = {}
        for ev in good:
            by_tenant.setdefault(ev.tenant_id, []).append(ev)
        stamp = int(msg.timestamp * 1000) if msg.timestamp else None
        for tenant, tenant_events in by_tenant.items():
            deliveries.append(await producer.send(usage_topic, dumps(tenant_events), key=tenant.encode(),
                                                  partition=route(tenant), timestamp_ms=stamp))
        translator.counts["messages"] += 1
    if deliveries:
        await asyncio.gather(*deliveries)
    for event in events:
        event.ack()
