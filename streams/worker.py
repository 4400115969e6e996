"""The Faust adapter: the worker's composition and its deciding loop.

The ordering contract, stated once (this module and streams.sink.buffer enforce it;
tests/unit/test_ordering_contract.py breaks each step on purpose, and the tests named below too):
  1. decide: each partition's messages go through the engine in offset order, with no hole
     (streams.faust_internals.batches; tests/unit/test_faust_fast_paths.py); bad input is
     dead-lettered with its reason and bytes as it is met (tests/integration/test_poison.py);
  2. publish: a control goes out as soon as the message that caused it is decided, never
     waiting for ClickHouse; alerts when the chunk ends (test_pipeline, the latency bench);
  3. changelog: when a chunk ends (``chunk_events`` events or ``chunk_max_s``), every state
     key it changed is sent once to its table's changelog, one drain at a time and each drain's
     records after the previous one's (streams.runtime.storing: off the deciding path, so a
     control never waits for a chunk's storing), so a key's records keep the order of its
     values (tests/unit/test_crash_windows.py);
  4. rows stored: the chunk's rows join the ClickHouse buffer, written by the writer process;
  5. acknowledge: the chunk's messages are acknowledged only once 3's records are on the
     broker and 4's rows are stored (tests/unit/test_sink_buffer.py); Faust commits offsets
     only over acknowledged messages (streams.faust_internals.patches, 5.).
A crash re-reads from the committed offset; the engine counts only what is missing (README).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import faust
from faust.types import TP

from tokenbrake.clients.killswitch import KillSwitch
from tokenbrake.schemas.codec import dumps
from tokenbrake.schemas.control import ControlEvent
from tokenbrake.schemas.sequence import ControlSigner, wall_clock_ms
from tokenbrake.streams.app import RawBytes, build_app
from tokenbrake.streams.chunk import Chunk
from tokenbrake.streams.emit.reassert import Reasserter
from tokenbrake.streams.emit.topic_latest import TopicLatest
from tokenbrake.streams.engine import STORES, PricedEvent
from tokenbrake.streams.faust_internals.tables import table_dicts
from tokenbrake.streams.heap import HeapAger
from tokenbrake.streams.ingest.decode import Rejected, decode, note_unknown_fields
from tokenbrake.streams.ingest.dedupe import Seen
from tokenbrake.streams.logs import LogBudget
from tokenbrake.streams.metrics import WorkerMeter, install_metrics
from tokenbrake.streams.otlp_flow import install_otlp
from tokenbrake.streams.outcome_flow import install_outcomes
from tokenbrake.streams.runtime.agents import run_input
from tokenbrake.streams.runtime.dead_letters import DeadLetters, uncountable
from tokenbrake.streams.runtime.forwarding import Forwarder
from tokenbrake.streams.runtime.health import install_health
from tokenbrake.streams.runtime.membership import install_membership
from tokenbrake.streams.runtime.publisher import Publisher
from tokenbrake.streams.runtime.routing import TenantRouter
from tokenbrake.streams.runtime.status import install_pages
from tokenbrake.streams.runtime.storing import Storing
from tokenbrake.streams.runtime.watchdog import broker_silence
from tokenbrake.streams.settings import Settings
from tokenbrake.streams.setup import build_engine
from tokenbrake.streams.sink.buffer import SinkBuffer
from tokenbrake.streams.sink.clickhouse import control_row, now_text, priced_entry, usage_source_bytes
from tokenbrake.streams.sink.process import SinkProcess
from tokenbrake.streams.sink.rollups import keep_totals

log = logging.getLogger("tokenbrake.worker")
#: how long deciding waits for a control decided mid-batch to reach the broker (see Publisher.delivered)
CONTROL_SEND_WAIT_S = 0.05


class Runtime:
    """Everything the agents share. One per worker process."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.app = build_app(settings, bootstrap)
        self.router = TenantRouter(settings.topic_partitions)
        self.engine = build_engine(settings, clock=wall_clock_ms, tenant_partition=self.router.partition)
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
        partitions = settings.topic_partitions
        self.usage_topic = self.app.topic(settings.topic_usage, schema=RawBytes(), partitions=partitions)
        self.dlq_topic = self.app.topic(settings.topic_dlq, key_serializer="raw", value_serializer="raw",
                                        partitions=partitions)
        self.control_topic = self.app.topic(settings.topic_control, key_serializer="raw",
                                            value_serializer="raw", partitions=1, compacting=True)
        self.alert_topic = self.app.topic(settings.topic_alerts, key_serializer="raw", value_serializer="raw",
                                          partitions=1)
        self.tables = {name: self.app.Table(name, default=None, partitions=partitions, key_type=str) for name in STORES}
        self.changelogs = {name: table.changelog_topic.get_topic_name() for name, table in self.tables.items()}
        self.sink = SinkBuffer(SinkProcess(settings.resolved_clickhouse_dsn, settings.clickhouse_database,
                                           settings.sink_write_timeout_s),
                               settings.sink_flush_rows, settings.sink_flush_interval_s,
                               settings.sink_max_buffer_rows, settings.sink_retry_max_s,
                               on_fatal=lambda exc: asyncio.ensure_future(self.app.crash(exc)),
                               on_refused=lambda refused: self.dead_letters.unstorable(refused))
        self.generation = 0
        self.attached = -1
        self.heap = HeapAger(settings.gc_freeze_interval_s)  # see streams.heap
        self.started = time.time()
        self.last_decided = time.monotonic()  # the last message taken (liveness: see stats_only)
        self.stats = {"messages": 0, "dead_lettered": 0, "controls": 0, "controls_unchanged": 0, "alerts": 0,
                      "forwarded": 0}
        self._chunk = Chunk(-1)  # decided, not yet persisted nor handed to the sink
        self._deciding = False  # a batch is being decided into self._chunk
        self._engine_errors = LogBudget(per_window=10, window_s=60.0)
        self._stopping = False  # the broker was lost: the worker is crashing on purpose
        self.unknown_fields: dict[str, int] = {}  # events with fields the contract does not know
        # one drain at a time, up to its changelog sends: a key's records reach the broker in the
        # order its values were taken (a tick's older value must not land after a chunk's newer one)
        self._draining = asyncio.Lock()
        self.meter = WorkerMeter.from_settings(settings)  # what only the hot path sees (streams.metrics)
        # what each drain stores (changelogs, then rows to the sink), in drain order, off the deciding path
        self.storing = Storing(self.app, self.changelogs, self.engine.encoder, self.meter, self.sink,
                               on_error=lambda exc: asyncio.ensure_future(self.app.crash(exc)))
        self.publisher = Publisher(self.signer, self.control_topic, self.alert_topic, self.topic_latest, self.meter,
                                   self.stats)
        self.dead_letters = DeadLetters(self.dlq_topic, self.meter, self.stats)
        self.forwarder = Forwarder(self.app, self.router, settings.topic_usage, self.stats)
        self._install()
        self.otlp = install_otlp(self)  # the OTLP input, when enabled: its events join the usage topic
        self.outcomes = install_outcomes(self)  # the outcomes input, when a unit-cost policy counts outcomes
        install_metrics(self)  # GET /metrics
        install_health(self)  # a pipeline_health row now and then, for Grafana

    # -- wiring --------------------------------------------------------------------------------
    def _install(self) -> None:
        app = self.app
        runtime = self
        install_membership(self)  # the generation counter, and the rebalance log
        install_pages(self)  # GET /tokenbrake/status and /tokenbrake/stats

        @app.agent(self.usage_topic, name="usage")
        async def usage(stream: faust.StreamT) -> None:
            await run_input(runtime, stream, "usage", runtime.on_batch)

        @app.task
        async def follow_controls() -> None:
            await runtime.control_view.start()

        @app.timer(interval=self.settings.tick_interval_s)
        async def tick() -> None:
            await runtime.on_tick()

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
        await self.storing.chain.idle()  # every chunk's records sent and rows handed over (drain order)
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
            keep_totals(((k, v, 0) for k, v in self.engine.totals()), time.time_ns(), self.storing.totals)
            self.attached = self.generation
            for control in list(self._by_hand.values()):  # newer than the persisted state, or idempotent
                self._on_control(control)
            log.info("state attached", extra={"generation": self.generation,
                                              "keys": self.engine.stats()["keys"],
                                              "reread_to": self.engine.reread_windows()})
            if self.engine.user_months_partial is not None:
                log.warning("this month's per-user totals began mid-month: a budget per user and month counts "
                            "this month's spend from the restart that added it, not from the 1st (set "
                            "TOKENBRAKE_USER_MONTH_TOTALS=true to keep them always)",
                            extra={"month": self.engine.user_months_partial})
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
                good = await self.forwarder.forward(msg, good, chunk.forwarded)
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
                elif result is Seen.LATE or result is Seen.FUTURE:
                    await self.dead_letter(msg, uncountable(result, ev, self.settings))
            if priced:  # bad elements: the rows are built from the valid events only (see usage_rows)
                chunk.rows.append((usage_source_bytes(good) if bad else msg.value, ingested, priced))
            if chunk.processed >= chunk_events:
                await self._end_chunk()
                chunk = self._chunk
        if engine.has_controls:  # decided by the batch's last messages: not held until the chunk ends
            await self._publish_controls(chunk)
        if chunk.taken and time.monotonic() - chunk.started >= self.settings.chunk_max_s:
            await self._end_chunk()

    async def _publish_controls(self, chunk: Chunk) -> None:
        controls = self.engine.take_controls()  # before the await: the tick may add more meanwhile
        published = await self.publisher.publish(controls, [])
        await self.publisher.delivered(CONTROL_SEND_WAIT_S)  # out now, not after the batch or the chunk's end
        chunk.published.extend(published)  # stored in ClickHouse with the chunk
        self.meter.decided(chunk.taken[-1].message.timestamp if chunk.taken else None, len(published))

    async def _end_chunk(self) -> None:
        """Publish what was decided and drain the changed state; then, off the deciding path
        and after the chunks drained before it (``runtime.storing``), persist the state and
        hand the rows to the sink, which acknowledges the chunk's messages once they are stored."""
        await self.storing.chain.room()  # before the chunk is cut: nothing is decided into it meanwhile
        chunk, self._chunk = self._chunk, Chunk(self.generation)
        events, rows = list(chunk.taken), chunk.rows  # a copy: only what is handed over now is acked
        self.stats["messages"] += len(events)
        async with self._draining:
            drained = self.engine.drain()
            controls = chunk.published + await self.publisher.publish(drained.controls, drained.alerts)
            self.storing.chain.then(lambda: self.storing.chunk(drained, controls, events, rows, chunk.forwarded))

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
            controls = await self.publisher.publish(drained.controls, drained.alerts)
            stored = self.storing.chain.then(lambda: self.storing.between_chunks(drained, controls))
        await asyncio.wait([stored])  # a failure is the chain's to report (it stops the worker)

    async def decide_between_batches(self, decide: Callable[[], Any]) -> None:
        """Another input's engine calls (``decide``, synchronous) once the state is attached and
        no usage batch is being decided (the tick's rule: no drain cuts a batch); then their
        state changes are on the broker and their decisions published before this returns."""
        while not self.ready() or self._deciding:
            await asyncio.sleep(0.05)
        decide()
        await self._drain_and_store()

    def _broker_lost(self) -> bool:
        """See streams.runtime.watchdog; the first time, the worker crashes on purpose (exit 1)."""
        silent = broker_silence(self.settings.broker_lost_exit_s, self.control_view.staleness_s)
        if silent is None:
            return False
        if not self._stopping:
            self._stopping = True
            asyncio.ensure_future(self.app.crash(ConnectionError(f"broker unreachable for {silent:.0f}s")))
        return True

    async def dead_letter(self, msg: Any, rejected: Rejected) -> None:
        await self.dead_letters.send(msg, rejected)
