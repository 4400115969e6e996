"""The outcomes input: ``TOKENBRAKE_TOPIC_OUTCOMES`` -> the unit-cost policies and ClickHouse.

On when the policies file has a unit-cost policy counted per outcome kind (``per: <kind>``;
``per: session`` needs only the usage topic). One more agent, on the outcomes topic, which
the worker creates with ``TOKENBRAKE_TOPIC_PARTITIONS`` partitions and refuses to start
without (see streams.runner): Faust then assigns partition p of both topics to the same
worker, so an outcome keyed by its tenant (``UsageReporter.record_outcome`` does) reaches the
worker holding that tenant's spend. Per batch of messages:

  1. each message is validated (one JSON OutcomeEvent); an invalid one goes to the
     dead-letter topic with its reason (``empty``, ``too_large``, ``not_json``,
     ``invalid_outcome``) and bytes;
  2. an outcome on another partition than its tenant's is sent on to it (decided there);
  3. once the state is attached and no usage batch is being decided, the engine counts each
     outcome once (``Engine.record_outcome``: deduplicated by outcome_id, the mark persisted),
     and the changed state reaches the changelogs (``Runtime.decide_between_batches``, which
     also publishes what was decided); after a rebalance meanwhile, nothing is counted nor
     acknowledged (the partition's owner reads the messages again);
  4. the outcome rows join the sink (``outcomes`` table, ReplacingMergeTree by outcome_id);
     the messages are acknowledged once the rows are stored.

A crash anywhere re-reads the unacknowledged messages: their persisted marks make them
duplicates (a redelivered outcome never lowers a unit cost) and their rows replace
themselves. ``tokenbrake outcomes sink`` stays for deployments whose worker does not read
the topic (no such policy); both writing the same outcome is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import faust
from pydantic import ValidationError

from tokenbrake.schemas.outcome import OutcomeEvent
from tokenbrake.streams.app import RawBytes
from tokenbrake.streams.faust_internals.changelog import aiokafka_producer
from tokenbrake.streams.finops.outcomes import OUTCOME_COLUMNS, outcome_row
from tokenbrake.streams.ingest.decode import MAX_MESSAGE_BYTES, Rejected
from tokenbrake.streams.logs import LogBudget
from tokenbrake.streams.runtime.agents import run_input

log = logging.getLogger("tokenbrake.outcomes")


def reads_outcomes(policies: Any) -> bool:
    """Whether the worker reads the outcomes topic (a unit-cost policy counts outcomes)."""
    return any(not u.per_session for u in policies.unit_costs)


def parse_outcome(value: bytes | None) -> OutcomeEvent | Rejected:
    """One message -> an OutcomeEvent, or why not.

    >>> parse_outcome(b"{").reason, parse_outcome(b'{"outcome_id": "o1"}').reason
    ('not_json', 'invalid_outcome')
    """
    if not value:
        return Rejected("empty", "empty message value", value or b"")
    if len(value) > MAX_MESSAGE_BYTES:
        return Rejected("too_large", f"{len(value)} bytes (at most {MAX_MESSAGE_BYTES})", value)
    try:
        return OutcomeEvent.model_validate_json(value)
    except ValidationError as exc:
        errors = exc.errors()
        if errors and errors[0]["type"] == "json_invalid":
            return Rejected("not_json", errors[0]["msg"], value)
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(outcome)'}: {e['msg']}" for e in errors[:5])
        return Rejected("invalid_outcome", detail, value)


class OutcomeFlow:
    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.counts: Counter[str] = Counter()
        self._log = LogBudget(per_window=1, window_s=60.0)

    async def on_batch(self, events: list[Any]) -> None:
        """Steps 1-4 of the module doc for one batch."""
        rt = self.runtime
        route, topic = rt.router.partition, rt.settings.topic_outcomes
        generation = rt.generation  # the batch's partitions are ours in this generation only
        outcomes: list[tuple[Any, OutcomeEvent]] = []
        done: list[Any] = []  # messages with nothing left to store (dead-lettered, forwarded)
        deliveries: list[asyncio.Future] = []
        for event in events:
            msg = event.message
            parsed = parse_outcome(msg.value)
            if isinstance(parsed, Rejected):  # 1.
                self.counts["dead_lettered"] += 1
                await rt.dead_letter(msg, parsed)
                done.append(event)
            elif route(parsed.tenant_id) != msg.partition:  # 2.
                producer = aiokafka_producer(rt.app)
                deliveries.append(await producer.send(topic, msg.value, key=parsed.tenant_id.encode(),
                                                      partition=route(parsed.tenant_id)))
                self.counts["forwarded"] += 1
                done.append(event)
                if self._log.allow():
                    log.warning("outcomes arrived on another partition than their tenant's and were forwarded: "
                                "key them by tenant_id", extra={"forwarded_total": self.counts["forwarded"]})
            else:
                outcomes.append((event, parsed))
        if deliveries:
            await asyncio.gather(*deliveries)
        for event in done:
            event.ack()
        if not outcomes:
            return

        def count() -> None:  # 3. (synchronous: no usage batch is decided in between)
            if rt.generation != generation:  # a rebalance meanwhile: the tenants' new owners read them
                outcomes.clear()
            for _, o in outcomes:
                self.counts[rt.engine.record_outcome(o).value] += 1

        await rt.decide_between_batches(count)
        if not outcomes:
            return  # not acknowledged: read again from the committed offset by the partition's owner
        now = datetime.now(UTC)
        taken = [event for event, _ in outcomes]

        def ack(taken: list[Any] = taken) -> None:
            for event in taken:
                event.ack()

        rt.sink.add_rows("outcomes", OUTCOME_COLUMNS, [outcome_row(o, now) for _, o in outcomes], ack)  # 4.
        await rt.sink.maybe_flush()


def install_outcomes(runtime: Any) -> OutcomeFlow | None:
    """Register the outcomes agent when a policy needs it; returns the flow (its counts are
    in the status), else None."""
    settings = runtime.settings
    if not runtime.engine.unit_costs.needs_outcomes:
        return None
    flow = OutcomeFlow(runtime)
    topic = runtime.app.topic(settings.topic_outcomes, schema=RawBytes(), partitions=settings.topic_partitions)

    @runtime.app.agent(topic, name="outcomes")
    async def outcomes(stream: faust.StreamT) -> None:
        await run_input(runtime, stream, "outcomes", flow.on_batch)

    log.info("outcomes input enabled", extra={"topic": settings.topic_outcomes})
    return flow
