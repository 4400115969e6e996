"""The Faust adapter: decode, call the pure core, emit, persist, sink. Nothing else.

Per chunk of about ``chunk_events`` events or ``chunk_max_s`` seconds, whichever first
(messages come from ``take_batches``: acks are ours):
  1. decode each message; bad ones go to the dead-letter topic with reason and bytes;
  2. the engine dedupes, prices, aggregates and decides;
  3. control and alert events are signed and published as soon as the message that caused
     them is decided (enforcement never waits for ClickHouse);
  4. every state key the chunk changed is written once to its table's changelog;
  5. rows and rollups join the ClickHouse buffer, which acks the messages once they are
     stored and the changelog records of step 4 are on the broker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
from faust.types import TP
from faust.web import Request, Response, View

from clients.killswitch import KillSwitch
from schemas.codec import dumps
from schemas.control import ControlEvent
from schemas.sequence import ControlSigner
from schemas.signing import Sealer
from streams.app import RawBytes, build_app
from streams.chunk import Chunk
from streams.decide.policies import load_policies
from streams.emit.dead_letter import dead_letter_record
from streams.emit.events import Emitted
from streams.emit.reassert import Reasserter
from streams.emit.topic_latest import TopicLatest
from streams.engine import STORES, Drained, Engine, EngineConfig, PricedEvent, wall_clock_ms
from streams.faust_internals.batches import take_batches
from streams.faust_internals.changelog import aiokafka_producer, send_packed
from streams.faust_internals.tables import table_dicts
from streams.heap import HeapAger
from streams.ingest.decode import Rejected, decode, note_unknown_fields
from streams.ingest.dedupe import Seen
from streams.ingest.routing import TenantRouter
from streams.logs import LogBudget
from streams.metrics import WorkerMeter, install_metrics
from streams.otlp_flow import install_otlp
from streams.price.overrides import Overrides
from streams.price.pricebook import PriceBook
from streams.settings import Settings
from streams.sink.buffer import SinkBuffer
from streams.sink.clickhouse import alert_row, control_row, now_text, priced_entry, usage_source_bytes
from streams.sink.process import SinkProcess
from streams.sink.rollups import Totals, keep_totals

log = logging.getLogger("tokenbrake.worker")


def build_engine(settings: Settings, clock: Any = None, router: TenantRouter | None = None) -> Engine:
    policies = load_policies(settings.policies_path)
    pricebook = PriceBook(Overrides.load(settings.price_overrides_path), settings.unpriced_fallback_model)
    pricebook.check_fallback()
    config = EngineConfig(dedupe_horizon_minutes=settings.dedupe_horizon_minutes,
                          dedupe_max_entries=settings.dedupe_max_entries, max_future_ms=settings.max_future_s * 1000)
    key_id, secret = settings.signing_key
    # sealed pickles are only as trustworthy as the key: with the public development key,
    # detector baselines stay in memory (anyone could forge a record the worker would unpickle)
    sealer = None if settings.uses_dev_key else Sealer(key_id, secret, settings.keyring)
    return Engine(policies, pricebook, config, clock=clock, sealer=sealer,
                  tenant_partition=router.partition if router else None)


class Runtime:
    """Everything the agents share. One per worker process."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.app = build_app(settings, bootstrap)
        self.router = TenantRouter(settings.topic_partitions)
        self.engine = build_engine(settings, clock=wall_clock_ms, router=self.router)
        # operators' controls, read back from the control topic (see decide.overrides)
        self.control_view = KillSwitch(bootstrap, settings.topic_control, **settings.control_view_kwargs())
        self.control_view.on_change.append(self._on_control)
        # refused records on scopes this worker owns are answered by their effective control
        self.reasserter = Reasserter(holds=lambda key: self.control_view.last_seq(key) is not None)
        self.control_view.on_ignored.append(self.reasserter.on_ignored)
        self.control_view.on_change.append(self.reasserter.on_accepted)
        # a control that says what the topic already says is not published again (a re-fired
        # transition after a crash): see streams.emit.topic_latest
        self.topic_latest = TopicLatest()
        self.control_view.on_change.append(self.topic_latest.on_accepted)
        self.control_view.on_ignored.append(self.topic_latest.on_ignored)
        self._by_hand: dict[str, ControlEvent] = {}  # scope key -> an operator's latest control
        self.key_id, self.secret = settings.signing_key
        # each control gets the next per-scope sequence after the highest read back (schemas.sequence)
        self.signer = ControlSigner(self.key_id, self.secret, last_seen=self.control_view.last_seq)
        n = settings.topic_partitions
        self.usage_topic = self.app.topic(settings.topic_usage, schema=RawBytes(), partitions=n)
        self.dlq_topic = self.app.topic(settings.topic_dlq, key_serializer="raw", value_serializer="raw",
                                        partitions=n)
        self.control_topic = self.app.topic(settings.topic_control, key_serializer="raw",
                                            value_serializer="raw", partitions=1, compacting=True)
        self.alert_topic = self.app.topic(settings.topic_alerts, key_serializer="raw", value_serializer="raw",
                                          partitions=1)
        self.tables = {name: self.app.Table(name, default=None, partitions=n, key_type=str) for name in STORES}
        self.changelogs = {name: table.changelog_topic.get_topic_name() for name, table in self.tables.items()}
        self.sink = SinkBuffer(SinkProcess(settings.resolved_clickhouse_dsn, settings.clickhouse_database,
                                           settings.sink_write_timeout_s),
                               settings.sink_flush_rows, settings.sink_flush_interval_s,
                               settings.sink_max_buffer_rows, settings.sink_retry_max_s,
                               on_fatal=lambda exc: asyncio.ensure_future(self.app.crash(exc)),
                               on_refused=self.dead_letter_unstorable)
        self.generation = 0
        self.attached = -1
        self.heap = HeapAger(settings.gc_freeze_interval_s)  # see streams.heap
        self.started = time.time()
        self.last_decided = time.monotonic()  # the last message taken (liveness: see stats_only)
        self.stats = {"messages": 0, "dead_lettered": 0, "controls": 0, "controls_unchanged": 0, "alerts": 0,
                      "forwarded": 0}
        self._misrouted_log = LogBudget(per_window=1, window_s=60.0)
        self._chunk = Chunk(-1)  # decided, not yet persisted nor handed to the sink
        self._deciding = False  # a batch is being decided into self._chunk
        self._engine_errors = LogBudget(per_window=10, window_s=60.0)
        self._stopping = False  # the broker was lost: the worker is crashing on purpose
        self._totals: Totals = {}  # rollup totals persisted, not yet handed to the sink
        self.unknown_fields: dict[str, int] = {}  # events with fields the contract does not know
        # one drain at a time, up to its changelog sends: a key's records reach the broker in the
        # order its values were taken (a tick's older value must not land after a chunk's newer one)
        self._draining = asyncio.Lock()
        self.meter = WorkerMeter.from_settings(settings)  # what only the hot path sees (streams.metrics)
        self._install()
        self.otlp = install_otlp(self)  # the OTLP input, when enabled: its events join the usage topic
        install_metrics(self)  # GET /metrics

    # -- wiring --------------------------------------------------------------------------------
    def _install(self) -> None:
        app = self.app
        runtime = self

        @app.on_rebalance_complete.connect
        async def _rebalanced(sender: Any, **kwargs: Any) -> None:
            runtime.generation += 1

        @app.agent(self.usage_topic, name="usage")
        async def usage(stream: faust.StreamT) -> None:
            try:
                async for events in take_batches(stream, runtime.settings.batch_max,
                                                 runtime.settings.batch_within_s):
                    await runtime.on_batch(events)
            except Exception as exc:  # a live process that decides nothing is worse than a restart
                log.critical("the usage agent failed; stopping the worker (exit 1) so a supervisor restarts it: "
                             "unacknowledged messages will be read again", exc_info=True)
                runtime._stopping = True
                await runtime.app.crash(exc)
                raise

        @app.task
        async def follow_controls() -> None:
            await runtime.control_view.start()

        @app.timer(interval=self.settings.tick_interval_s)
        async def tick() -> None:
            await runtime.on_tick()

        @app.page("/tokenbrake/status")
        class Status(View):
            async def get(self, request: Request) -> Response:
                limit = request.query.get("limit", "50")
                return self.json(runtime.status(int(limit) if limit.isdigit() else 50))

        @app.page("/tokenbrake/stats")
        class Stats(View):  # cheap: no scan of the spend state, fine to poll often
            async def get(self, request: Request) -> Response:
                return self.json(runtime.stats_only())

        @app.on_before_shutdown.connect
        async def _flush(sender: Any, **kwargs: Any) -> None:
            try:  # bounded: with the broker or ClickHouse gone, stop anyway (nothing unstored is acked)
                await asyncio.wait_for(runtime.flush_for_shutdown(), runtime.settings.shutdown_timeout_s)
            except TimeoutError:
                log.error("shutdown flush timed out after %ss; unacknowledged messages will be redelivered",
                          runtime.settings.shutdown_timeout_s)
            await runtime.control_view.stop()

    async def flush_for_shutdown(self) -> None:
        if self._chunk_due():
            await self._end_chunk()
        if self.attached == self.generation:
            self.engine.save_baselines()  # a deploy loses no detector history
        await self._drain_and_store()
        await self.app.producer.flush()  # changelogs, controls and alerts out before we stop
        await self.sink.maybe_flush(force=True)

    def ready(self) -> bool:
        recovery = self.app.tables.recovery
        if self.app.in_recovery or not recovery.completed.is_set() or not self.control_view.loaded:
            return False  # the state, and what the control topic says, before any decision
        if self.attached != self.generation:
            self.engine.attach({name: table_dicts(table) for name, table in self.tables.items()})
            # the restored totals may be newer than what reached ClickHouse before a crash or an
            # outage (their messages come back as redeliveries, which change no total): write them all
            keep_totals(((k, v, 0) for k, v in self.engine.totals()), time.time_ns(), self._totals)
            self.attached = self.generation
            for control in list(self._by_hand.values()):  # newer than the persisted state, or idempotent
                self._on_control(control)
            log.info("state attached", extra={"generation": self.generation,
                                              "keys": self.engine.stats()["keys"]})
        return True

    def _on_control(self, control: ControlEvent) -> None:
        """An operator's control (``tokenbrake control``) counts as one more rule on its scope,
        on the worker that owns the scope's tenant, once the state is attached."""
        if control.issued_by != "operator":
            return
        key = control.scope.key()
        self._by_hand.pop(key, None)
        self._by_hand[key] = control  # latest last
        partition = self.router.partition(control.scope.tenant_id)
        if self.attached == self.generation and TP(self.settings.topic_usage, partition) in \
                self.app.assignor.assigned_actives():
            self.engine.operator_control(control)
            # the audit trail: the owning worker stores it like its own controls; seen again after a
            # restart (the control topic is read from the start), the same row replaces itself
            self.sink.add([], [control_row(control)], [], lambda: None)

    def _owns(self, tenant: str) -> bool:
        """The tenant's partition is assigned here (and the state attached)."""
        return self.attached == self.generation and TP(self.settings.topic_usage, self.router.partition(tenant)) \
            in self.app.assignor.assigned_actives()

    # -- the flow ------------------------------------------------------------------------------
    async def on_batch(self, events: list[faust.EventT]) -> None:
        """Decide a batch of messages into the pending chunk, which ends (state persisted, rows
        handed to the sink) every ``chunk_events`` events or ``chunk_max_s`` seconds; the tick
        ends it too when no batch is being decided."""
        while not self.ready():  # messages fetched before table recovery finished wait for the state
            await asyncio.sleep(0.05)
        self._deciding = True
        try:
            await self._decide(events)
        finally:
            self._deciding = False

    def _chunk_due(self) -> bool:
        """The tick or the shutdown flush may end the pending chunk: it has messages of this
        generation and no batch is being decided into it (both also run while the agent waits
        inside a batch; a chunk left pending at shutdown is not acknowledged: redelivered)."""
        chunk = self._chunk
        return bool(chunk.taken) and chunk.generation == self.generation and not self._deciding

    async def _decide(self, events: list[faust.EventT]) -> None:
        chunk = self._chunk
        if chunk.generation != self.generation:  # decided on state a rebalance replaced: not persisted,
            chunk = self._chunk = Chunk(self.generation)  # not acknowledged; the owner reads them again
        engine = self.engine
        chunk_events = self.settings.chunk_events
        ingested = now_text()
        for event in events:
            if engine.has_controls:  # enforcement first: publish now, not at the end of the chunk
                await self._publish_controls(chunk)
            msg = event.message
            chunk.taken.append(event)
            self.last_decided = time.monotonic()
            try:
                good, bad = decode(msg.value)
            except Exception as exc:  # a decoder bug: this message, not the stream, pays for it
                good, bad = [], [Rejected("internal_error", f"decoding failed: {type(exc).__name__}: {exc}",
                                          msg.value or b"")]
            note_unknown_fields(good, self.unknown_fields)
            for rejected in bad:
                await self.dead_letter(msg, rejected)
            if good and not self.router.all_on(good, msg.partition):
                good = await self._forward(msg, good, chunk)
            priced: list[tuple] = []  # this message's usage rows (see UsageSource)
            for index, ev in enumerate(good):
                chunk.processed += 1
                if chunk.processed % 1000 == 0:
                    await asyncio.sleep(0)  # let heartbeats, timers and the web endpoint run
                try:
                    result = engine.process(ev, msg.partition, msg.offset, index)
                except Exception as exc:  # a bug must not stop enforcement for everyone else
                    if self._engine_errors.allow():  # a systematic bug must not flood the log either
                        log.exception("engine failed on an event; dead-lettered", extra={"event_id": ev.event_id})
                    await self.dead_letter(msg, Rejected("internal_error", f"{type(exc).__name__}: {exc}", dumps(ev)))
                    continue
                if isinstance(result, PricedEvent):
                    priced.append(priced_entry(result))
                    self.meter.priced(result)
                elif result is Seen.LATE:
                    await self.dead_letter(msg, Rejected(
                        "late", f"event {ev.event_id} is older than the dedupe horizon "
                        f"({self.settings.dedupe_horizon}); it cannot be counted exactly once", dumps(ev)))
                elif result is Seen.FUTURE:
                    await self.dead_letter(msg, Rejected(
                        "future", f"event {ev.event_id} is stamped more than {self.settings.max_future_s}s ahead "
                        "of the worker's clock (TOKENBRAKE_MAX_FUTURE_S); fix the producer's clock and replay it",
                        dumps(ev)))
            if priced:  # bad elements: the rows are built from the valid events only (see usage_rows)
                chunk.rows.append((usage_source_bytes(good) if bad else msg.value, ingested, priced))
            if chunk.processed >= chunk_events:
                await self._end_chunk()
                chunk = self._chunk
        if engine.has_controls:  # decided by the batch's last messages: not held until the chunk ends
            await self._publish_controls(chunk)
        if chunk.taken and time.monotonic() - chunk.started >= self.settings.chunk_max_s:
            await self._end_chunk()

    async def _forward(self, msg: Any, events: list[Any], chunk: Chunk) -> list[Any]:
        """Send events that belong to another partition (see streams.ingest.routing) on to it,
        keyed by tenant; they are decided when they arrive there. The message is acknowledged
        only once they are delivered. Returns the events that stay."""
        stay, away = self.router.split(events, msg.partition)
        producer = aiokafka_producer(self.app)
        for (target, tenant), moved in away.items():
            chunk.forwarded.append(await producer.send(self.settings.topic_usage, dumps(moved), key=tenant.encode(),
                                                       partition=target))
            self.stats["forwarded"] += len(moved)
        if self._misrouted_log.allow():
            log.warning("events arrived on another partition than their tenant's and were forwarded: producers "
                        "should key messages by tenant_id with Kafka's default (murmur2) partitioner",
                        extra={"forwarded_total": self.stats["forwarded"], "topic": msg.topic,
                               "partition": msg.partition})
        return stay

    async def _publish_controls(self, chunk: Chunk) -> None:
        controls = self.engine.take_controls()  # before the await: the tick may add more meanwhile
        published = await self.publish(Emitted(controls, []))
        chunk.published.extend(published)  # stored in ClickHouse with the chunk
        self.meter.decided(chunk.taken[-1].message.timestamp if chunk.taken else None, len(published))

    async def _end_chunk(self) -> None:
        """Publish what was decided, persist the changed state, hand the rows to the sink
        (which acknowledges the chunk's messages once they are stored)."""
        chunk, self._chunk = self._chunk, Chunk(self.generation)
        events, rows = list(chunk.taken), chunk.rows  # a copy: only what is handed over now is acked
        self.stats["messages"] += len(events)
        async with self._draining:
            drained = self.engine.drain()
            controls = chunk.published + await self.publish(drained)
            durable = await self.persist(drained.changes, wait=False)  # the next chunk is decided meanwhile
        durable += chunk.forwarded

        def ack(events: list[faust.EventT] = events) -> None:
            for e in events:
                e.ack()

        self.sink.add(rows, [control_row(c) for c in controls], [alert_row(a) for a in drained.alerts], ack,
                      *self._take_rollups(drained.stale_minutes), durable=durable)
        await self.sink.maybe_flush()

    async def on_tick(self) -> None:
        if self._broker_lost():
            return
        if not self.ready():
            return
        self.heap.maybe_age()
        suppressed = self._engine_errors.take_suppressed()
        if suppressed:
            log.error("engine failed on %d more events (dead-lettered as internal_error, not logged one by one)",
                      suppressed)
        if self._chunk_due():
            await self._end_chunk()  # a quiet stream: do not hold the last messages any longer
        for scope in self.reasserter.take(owns=self._owns):
            self.engine.reassert(scope)
        try:
            self.engine.tick()
        except Exception:  # keep the worker alive; the next tick retries
            log.exception("engine tick failed")
        if not self._deciding:  # mid-batch, the chunk's end drains what the tick decided
            await self._drain_and_store()
        await self.sink.maybe_flush()

    async def _drain_and_store(self) -> None:
        """Publish what was decided outside a chunk (the tick's rollovers and decays), write the
        changed state to the changelogs and hand the changed totals and decisions to the sink
        (no message waits on them: nothing to acknowledge)."""
        async with self._draining:
            drained = self.engine.drain()
            controls = await self.publish(drained) if drained.controls or drained.alerts else []
            pending = await self.persist(drained.changes, wait=False)
        if pending:
            await asyncio.gather(*pending)
        if controls or drained.alerts or self._totals or drained.stale_minutes:
            self.sink.add([], [control_row(c) for c in controls], [alert_row(a) for a in drained.alerts],
                          lambda: None, *self._take_rollups(drained.stale_minutes))

    def _broker_lost(self) -> bool:
        """True once the broker has not answered for ``broker_lost_exit_s``: the worker stops
        (exit 1; nothing undecided was acknowledged) so that its supervisor starts it again,
        rather than retrying for ever. The control view proves contact every 2 seconds."""
        limit = self.settings.broker_lost_exit_s
        silent = self.control_view.staleness_s
        if not limit or silent <= limit or silent == float("inf"):  # inf: not started yet
            return False
        if not self._stopping:
            self._stopping = True
            log.critical("no answer from the broker for %.0fs (TOKENBRAKE_BROKER_LOST_EXIT_S=%s): stopping so a "
                         "supervisor restarts the worker", silent, limit)
            asyncio.ensure_future(self.app.crash(ConnectionError(f"broker unreachable for {silent:.0f}s")))
        return True

    async def publish(self, emitted: Emitted | Drained) -> list[ControlEvent]:
        """Sign and publish the controls that change what the control topic says (see
        streams.emit.topic_latest) and every alert. Returns the controls published."""
        published = []
        for control in emitted.controls:
            if self.topic_latest.unchanged(control):
                self.stats["controls_unchanged"] += 1
                continue
            signed = self.signer.issue(control)
            self.topic_latest.sent(signed)
            published.append(control)
            await self.control_topic.send(key=control.scope.key().encode(), value=dumps(signed))
            log.info("control issued", extra={"scope": control.scope.key(), "action": control.action,
                                              "downgrade_to": control.downgrade_to, "rule": control.reason.rule})
        for alert in emitted.alerts:
            await self.alert_topic.send(key=alert.dedup_key.encode(), value=dumps(alert))
            log.warning("alert %s", alert.summary, extra={"rule": alert.rule, "state": alert.state,
                                                          "severity": alert.severity})
        self.stats["controls"] += len(published)
        self.stats["alerts"] += len(emitted.alerts)
        self.meter.published(Emitted(published, emitted.alerts))
        return published

    async def persist(self, changes: dict[str, list[tuple[str, Any, int]]],
                      wait: bool = True) -> list[asyncio.Future]:
        """Write each changed key to its table's changelog, once (see ``send_packed``). Returns
        the broker's acknowledgements; with ``wait`` they are awaited here, otherwise the caller
        makes sure no message is acknowledged before them (the sink awaits them before it acks)."""
        producer = aiokafka_producer(self.app)
        pending = []
        for name, records in changes.items():
            self.meter.changelog(name, len(records))
            if name == "aggregates":  # the ClickHouse rollups are these same totals
                keep_totals(records, time.time_ns(), self._totals)
            pending += await send_packed(producer, self.changelogs[name], records)
        if wait and pending:
            await asyncio.gather(*pending)
        return pending

    def _take_rollups(self, stale_minutes: set[tuple[str, int]]) -> tuple[Totals, set[tuple[str, int]]]:
        taken, self._totals = self._totals, {}
        return taken, stale_minutes

    async def dead_letter(self, msg: Any, rejected: Rejected) -> None:
        """To the dead-letter topic (see streams.emit.dead_letter)."""
        self.stats["dead_lettered"] += 1
        self.meter.dead_lettered(rejected.reason)
        source = None
        if msg is not None:
            log.debug("dead-lettered", extra={"reason": rejected.reason, "partition": msg.partition,
                                              "offset": msg.offset})
            source = f"{msg.topic}/{msg.partition}/{msg.offset}"
        value, headers = dead_letter_record(rejected.reason, rejected.error, rejected.payload, source)
        await self.dlq_topic.send(key=msg.key if msg is not None else None, value=value, headers=headers)

    async def dead_letter_unstorable(self, refused: list[tuple[bytes, str]]) -> None:
        """Usage events ClickHouse refused to store: counted in the totals, not in usage_events."""
        log.error("%d usage events could not be stored in ClickHouse; dead-lettered (reason unstorable): %s",
                  len(refused), refused[0][1][:500])
        for event, error in refused:
            await self.dead_letter(None, Rejected("unstorable", error, event))

    def stats_only(self) -> dict[str, Any]:
        engine, silent = self.engine.stats(), self.control_view.staleness_s
        return {"ready": self.attached >= 0, "counts": {**engine["counts"], **self.unknown_fields},
                "watermark_ms": engine["watermark_ms"], "controls": engine["controls"],
                "control_view": {"applied": self.control_view.applied, "ignored": dict(self.control_view.ignored),
                                 "reasserted": self.reasserter.reasserted},
                "worker": {**self.stats, "uptime_s": round(time.time() - self.started, 1), "sink": self.sink.stats(),
                           "last_message_age_s": round(time.monotonic() - self.last_decided, 1),
                           "broker_silent_s": None if silent == float("inf") else round(silent, 1)}}

    def status(self, limit: int = 50) -> dict[str, Any]:
        stats = self.stats_only()
        return {**self.engine.status(limit), "ready": stats["ready"], "worker": stats["worker"],
                "control_view": stats["control_view"]}
