"""The worker's ordering contract (the numbered steps of streams/worker.py's docstring), one test per
step that breaks the step on purpose and shows the check failing, beside the check passing on the
real code; and the same for the rule that the tick never drains the engine in the middle of a batch.

The worker's own deciding loop runs (``Runtime.on_batch``, ``_end_chunk``, ``Storing``) with the
real engine and the real ``SinkBuffer``; what Faust and the brokers would do is played by fakes
that write one shared log: the messages (their ``ack``), the control publisher, the changelog
producer (whose acknowledgements the test gives when it chooses) and the ClickHouse writer (run
inline, so the order of events in the log does not depend on a thread).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor, Future
from types import SimpleNamespace
from typing import Any

import pytest

from tests.helpers import NOW_MS, event
from tokenbrake.schemas.codec import dumps
from tokenbrake.streams.chunk import Chunk
from tokenbrake.streams.decide.policies import parse_policies
from tokenbrake.streams.engine import Engine
from tokenbrake.streams.logs import LogBudget
from tokenbrake.streams.price import PriceBook
from tokenbrake.streams.runtime import storing as storing_module
from tokenbrake.streams.runtime.routing import TenantRouter
from tokenbrake.streams.runtime.storing import Storing
from tokenbrake.streams.sink.buffer import SinkBuffer
from tokenbrake.streams.worker import Runtime

POLICY = """
budgets:
  - id: acme-day
    scope: {tenant: acme}
    period: day
    limit_usd: "0.005"           # the second gpt-4o call of 1000 in / 100 out ($0.0035 each) goes over
    on_exceed:
      - {at: 1.0, action: block}
"""
#: offset -> the tenant of its one event; None: a message that is not JSON (dead-lettered). The event
#: at offset 2 takes the tenant over its budget: the control's cause, with more messages after it.
MESSAGES = {0: "acme", 1: None, 2: "acme", 3: "acme", 4: "acme"}


class Msg(SimpleNamespace):
    pass


class Taken:
    """A Faust event as the agent takes it: its message, and ``ack``."""

    def __init__(self, log: list, offset: int, value: bytes) -> None:
        self.log = log
        self.message = Msg(partition=0, offset=offset, value=value, timestamp=NOW_MS / 1000, topic="usage", key=None)

    def ack(self) -> None:
        self.log.append(("ack", self.message.offset))


class Inline(Executor):
    """Runs the ClickHouse write at once on the loop's thread: the log's order is the code's."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:
        done: Future = Future()
        done.set_result(fn(*args, **kwargs))
        return done


class Writer:
    def __init__(self, log: list) -> None:
        self.log = log

    def write(self, batch: Any) -> list:
        self.log.append(("stored", {entry[0] for source in batch.usage for entry in source[2]}))
        return []

    def close(self) -> None:
        pass


class Broker:
    """The changelog producer: records each key sent; acknowledges when the test says so."""

    def __init__(self, log: list) -> None:
        self.log, self.pending = log, []

    async def send_packed(self, producer: Any, topic: str, records: Any, encode: Any = None) -> list[asyncio.Future]:
        futures = []
        for key, _, _ in records:
            self.log.append(("changelog", topic, key))
            future = asyncio.get_running_loop().create_future()
            self.pending.append((future, topic, key))
            futures.append(future)
        return futures

    def acknowledge(self) -> None:
        for future, topic, key in self.pending:
            self.log.append(("changelog_acked", topic, key))
            future.set_result(None)
        self.pending.clear()


class Publisher:
    """Publishes nothing anywhere; ``during_publish`` stands for what the event loop runs while the
    agent awaits the broker (the tick's timer, say)."""

    def __init__(self, log: list) -> None:
        self.log = log
        self.during_publish: Any = None

    async def publish(self, controls: list, alerts: list) -> list:
        if controls:
            self.log.append(("publish", [c.action for c in controls]))
            if self.during_publish is not None:
                during, self.during_publish = self.during_publish, None
                await during()
        return controls

    async def delivered(self, timeout_s: float) -> None:
        self.log.append(("delivered",))


def runtime(log: list, broker: Broker) -> Runtime:
    """A Runtime with the real deciding loop and everything Faust provides played by fakes."""
    rt = Runtime.__new__(Runtime)
    engine = Engine(parse_policies(POLICY), PriceBook())
    process, drain = engine.process, engine.drain

    def logged_process(ev: Any, partition: int = 0, offset: int = -1, index: int = 0) -> Any:
        result = process(ev, partition, offset, index)
        log.append(("process", offset, ev.event_id))
        if engine.has_controls:
            log.append(("control_decided", offset))
        return result

    def logged_drain() -> Any:
        drained = drain()
        log.append(("drained", {(name, key) for name, records in drained.changes.items() for key, _, _ in records}))
        return drained

    engine.process, engine.drain = logged_process, logged_drain
    rt.settings = SimpleNamespace(chunk_events=1000, chunk_max_s=3600.0, dedupe_horizon="24h", max_future_s=300,
                                  topic_usage="usage")
    rt.engine, rt.generation, rt._chunk, rt._deciding = engine, 0, Chunk(0), False
    rt.router = TenantRouter(1)
    rt.meter = SimpleNamespace(priced=lambda result: None, decided=lambda ts, n: None,
                               changelog=lambda name, n: None)
    rt.stats = {"messages": 0}
    rt.unknown_fields = {}
    rt._engine_errors = LogBudget(per_window=10, window_s=60.0)
    rt._draining = asyncio.Lock()
    rt.changelogs = {name: f"changelog-{name}" for name in engine.stores}
    rt.publisher = Publisher(log)
    rt.app = None
    rt.ready = lambda: True
    rt._broker_lost = lambda: False
    rt.heap = SimpleNamespace(maybe_age=lambda: None)
    rt.reasserter = SimpleNamespace(take=lambda owns: [])

    async def dead_letter(msg: Any, rejected: Any) -> None:
        log.append(("dead_letter", msg.offset))

    rt.dead_letter = dead_letter
    rt.sink = SinkBuffer(Writer(log), flush_rows=1, flush_interval_s=0.0, max_rows=10_000, retry_max_s=1.0)
    rt.sink._executor = Inline()
    rt.storing = Storing(None, rt.changelogs, engine.encoder, rt.meter, rt.sink)
    return rt


async def run_worker(monkeypatch: pytest.MonkeyPatch, tick_mid_batch: bool = False) -> list:
    """One batch of five messages decided (with ``tick_mid_batch``, the tick's timer fires while the
    agent awaits the control's publication), the chunk ended, stored, and its changelog acknowledged."""
    log: list = []
    broker = Broker(log)
    monkeypatch.setattr(storing_module, "send_packed", broker.send_packed)
    monkeypatch.setattr(storing_module, "aiokafka_producer", lambda app: None)
    rt = runtime(log, broker)
    if tick_mid_batch:
        async def tick() -> None:
            log.append(("tick",))
            await rt.on_tick()

        rt.publisher.during_publish = tick
    batch = [Taken(log, offset, b"not json" if tenant is None else
                   dumps(event(tenant_id=tenant, event_id=f"m{offset}", ts=NOW_MS + offset).model_dump(mode="json")))
             for offset, tenant in MESSAGES.items()]
    await rt.on_batch(batch)
    await rt._end_chunk()  # what chunk_events or chunk_max_s would do
    for _ in range(10):  # let the background flush run as far as it can without the broker
        await asyncio.sleep(0)
    log.append(("broker_acknowledges",))
    broker.acknowledge()
    await rt.sink.maybe_flush(force=True)
    return log


def violations(log: list) -> set[int]:
    """The steps of the ordering contract the log breaks."""
    broken: set[int] = set()
    processed = [entry[1] for entry in log if entry[0] == "process"]
    where = {}  # first index of each (kind, offset)
    for i, entry in enumerate(log):
        if entry[0] in ("process", "dead_letter", "ack", "control_decided"):
            where.setdefault((entry[0], entry[1]), i)
    # 1. decide: in offset order; a bad message dead-lettered when it is met
    if processed != sorted(processed):
        broken.add(1)
    for (kind, offset), i in where.items():
        if kind == "dead_letter" and any(where.get(("process", later), -1) < i for later in processed
                                         if later > offset):
            broken.add(1)
    # 2. publish: a control goes out before the next message is decided, and before anything is stored
    for (kind, offset), i in where.items():
        if kind != "control_decided":
            continue
        published = next((j for j in range(i, len(log)) if log[j][0] == "publish"), len(log))
        following = [where[("process", later)] for later in processed if later > offset]
        stored = [j for j, entry in enumerate(log) if entry[0] == "stored"]
        if any(j < published for j in following + stored):
            broken.add(2)
    # 3. changelog: every key a drain took is sent to the changelog, once, before any message is acknowledged
    first_ack = min((i for (kind, _), i in where.items() if kind == "ack"), default=len(log))
    sent = [(entry[1].removeprefix("changelog-"), entry[2]) for entry in log[:first_ack] if entry[0] == "changelog"]
    drained = set().union(*[entry[1] for entry in log[:first_ack] if entry[0] == "drained"])
    if not drained <= set(sent) or len(sent) != len(set(sent)):
        broken.add(3)
    # 4. rows stored before their message is acknowledged
    stored_ids: set[str] = set()
    for entry in log:
        if entry[0] == "stored":
            stored_ids |= entry[1]
        if entry[0] == "ack" and MESSAGES[entry[1]] is not None and f"m{entry[1]}" not in stored_ids:
            broken.add(4)
    # 5. acknowledge only once the changelog records are on the broker (and the rows stored: 4)
    acked_on_broker = log.index(("broker_acknowledges",))
    if first_ack < acked_on_broker:
        broken.add(5)
    if not {offset for kind, offset in where if kind == "ack"} == set(MESSAGES):
        broken.add(5)  # every message of the chunk acknowledged in the end
    return broken


def test_the_worker_keeps_every_step(monkeypatch):
    log = asyncio.run(run_worker(monkeypatch))
    assert violations(log) == set()
    assert ("dead_letter", 1) in log and ("publish", ["block"]) in log  # the scenario exercises every step


def test_step_1_deciding_out_of_offset_order_is_caught(monkeypatch):
    decide = Runtime._decide
    monkeypatch.setattr(Runtime, "_decide", lambda self, events: decide(self, events[::-1]))
    assert 1 in violations(asyncio.run(run_worker(monkeypatch)))


def test_step_2_a_control_held_until_the_chunk_ends_is_caught(monkeypatch):
    async def hold(self, chunk):  # the controls wait in the engine for the chunk's drain
        return None

    monkeypatch.setattr(Runtime, "_publish_controls", hold)
    assert 2 in violations(asyncio.run(run_worker(monkeypatch)))


def test_step_3_a_store_left_out_of_the_changelog_is_caught(monkeypatch):
    persist = Storing.persist

    async def without_decisions(self, changes, wait=True):
        return await persist(self, {name: records for name, records in changes.items() if name != "decisions"},
                             wait)

    monkeypatch.setattr(Storing, "persist", without_decisions)
    assert 3 in violations(asyncio.run(run_worker(monkeypatch)))


def test_step_4_acknowledging_before_the_rows_are_stored_is_caught(monkeypatch):
    add = SinkBuffer.add

    def ack_on_hand_over(self, usage, controls, alerts, ack, *args, **kwargs):
        ack()
        return add(self, usage, controls, alerts, lambda: None, *args, **kwargs)

    monkeypatch.setattr(SinkBuffer, "add", ack_on_hand_over)
    assert 4 in violations(asyncio.run(run_worker(monkeypatch)))


def test_step_5_acknowledging_before_the_changelog_is_on_the_broker_is_caught(monkeypatch):
    persist = Storing.persist

    async def not_handed_to_the_sink(self, changes, wait=True):
        await persist(self, changes, wait)
        return []  # the broker's acknowledgements are not what the sink waits for

    monkeypatch.setattr(Storing, "persist", not_handed_to_the_sink)
    assert violations(asyncio.run(run_worker(monkeypatch))) == {5}


def drained_mid_batch(log: list) -> bool:
    """Whether the engine was drained between the batch's first and last decided message."""
    decided = [i for i, entry in enumerate(log) if entry[0] == "process"]
    return any(entry[0] == "drained" for entry in log[decided[0]:decided[-1]])


def test_the_tick_does_not_drain_the_engine_in_the_middle_of_a_batch(monkeypatch):
    log = asyncio.run(run_worker(monkeypatch, tick_mid_batch=True))
    assert ("tick",) in log and not drained_mid_batch(log)
    assert violations(log) == set()  # what the tick decided is drained at the chunk's end


def test_a_tick_that_drains_mid_batch_is_caught(monkeypatch):
    monkeypatch.setattr(Runtime, "_deciding", property(lambda self: False, lambda self, value: None),
                        raising=False)  # the tick cannot tell that a batch is being decided
    assert drained_mid_batch(asyncio.run(run_worker(monkeypatch, tick_mid_batch=True)))


def test_a_chunk_being_stored_holds_neither_deciding_nor_the_next_control(monkeypatch):
    """Step 3 runs off the deciding path (streams.runtime.storing): while the broker has not
    taken a chunk's changelog records, the next messages are decided and their control goes out;
    the next chunk's records still follow the first chunk's."""

    async def scenario() -> tuple[list, bool]:
        log: list = []
        broker = Broker(log)
        broker_slow = asyncio.Event()

        async def slow_send(producer: Any, topic: str, records: Any, encode: Any = None) -> list:
            await broker_slow.wait()
            return await broker.send_packed(producer, topic, records, encode)

        monkeypatch.setattr(storing_module, "send_packed", slow_send)
        monkeypatch.setattr(storing_module, "aiokafka_producer", lambda app: None)
        rt = runtime(log, broker)

        def taken(offset: int) -> Taken:
            value = event(tenant_id="acme", event_id=f"m{offset}", ts=NOW_MS + offset).model_dump(mode="json")
            return Taken(log, offset, dumps(value))

        await rt.on_batch([taken(0)])
        await rt._end_chunk()  # its storing waits for the broker
        await rt.on_batch([taken(1), taken(2)])  # the second call crosses the budget
        control_first = ("publish", ["block"]) in log and not any(entry[0] == "changelog" for entry in log)
        await rt._end_chunk()
        broker_slow.set()
        await rt.storing.chain.idle()
        return log, control_first

    log, control_first = asyncio.run(scenario())
    assert control_first  # decided and published while the first chunk was still being stored
    drains = [entry[1] for entry in log if entry[0] == "drained"]
    sent = [(entry[1].removeprefix("changelog-"), entry[2]) for entry in log if entry[0] == "changelog"]
    assert len(drains) == 2 and set(sent[:len(drains[0])]) == drains[0]  # the first chunk's records first
    assert set(sent[len(drains[0]):]) == drains[1]
