"""The two places the worker steps around Faust's per-message machinery keep its rules:
stale events are skipped unacked, pending acks are tracked, and a delivery that could block
still goes through Faust's interruptible path. (The integration tests run both for real.)"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP
from intervaltree import IntervalTree

from tokenbrake.streams.faust_internals import patches as compat
from tokenbrake.streams.faust_internals.batches import take_batches
from tokenbrake.streams.faust_internals.patches import FIRST_DELIVERED, SOUGHT


class Flow:
    def __init__(self, active: bool = True) -> None:
        self.active = active

    def is_active(self) -> bool:
        return self.active


def _event(offset: int, generation: int = 1) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(offset=offset, generation_id=generation, tracked=False,
                                                   topic="usage", tp=TP("usage", 0)))


def _app(tracked: list[int], sought: list[tuple], flow: Any = None) -> SimpleNamespace:
    async def seek(tp: Any, offset: int) -> None:
        sought.append((tp, offset))

    consumer = SimpleNamespace(track_message=lambda m: tracked.append(m.offset), seek=seek,
                               _committed_offset=defaultdict(lambda: None), _gap=defaultdict(IntervalTree))
    return SimpleNamespace(consumer=consumer, topics=SimpleNamespace(acking_topics={"usage"}),
                           flow_control=flow or Flow(), consumer_generation_id=1)


async def _take(app: SimpleNamespace, queued: list[SimpleNamespace], probe: Any, rounds: int) -> list[list[int]]:
    """The offsets of the first ``rounds`` batches take_batches yields (three events taken at a time)."""
    queue: asyncio.Queue = asyncio.Queue()
    stream = SimpleNamespace(app=app, channel=SimpleNamespace(queue=queue), should_stop=False)
    for event in queued:
        queue.put_nowait(event)
    batches: list[list[int]] = []
    taking = take_batches(stream, max_events=3, within_s=0, probe=probe)
    while len(batches) < rounds:
        batch = await asyncio.wait_for(taking.__anext__(), timeout=5)
        batches.append([e.message.offset for e in batch])
    return batches


def _no_gap_probe(records: set[int]) -> Any:
    async def probe(tp: Any, offset: int) -> int | None:
        return min((o for o in records if o >= offset), default=None)

    return probe


def test_take_batches_delivers_each_partition_in_offset_order_and_reads_holes_again():
    """A message further on than the partition's next offset (one fetched before the seek, or
    after a message from an old generation was skipped) is held back, not acknowledged, and the
    partition sought back to the next offset: the engine never decides past a hole
    (streams.faust_internals.patches, 7.)."""
    tracked: list[int] = []
    sought: list[tuple] = []
    SOUGHT.clear()
    SOUGHT[("usage", 0)] = 0
    app = _app(tracked, sought)
    queued = [_event(0), _event(1, generation=0), _event(2), _event(3), _event(4),  # 1: an old generation's
              _event(1), _event(2), _event(3), _event(4), _event(5)]  # read again from 1 after the seek
    batches = asyncio.run(_take(app, queued, _no_gap_probe({0, 1, 2, 3, 4, 5}), rounds=4))
    assert batches == [[0], [1], [2, 3, 4], [5]]
    assert sought == [(("usage", 0), 1), (("usage", 0), 1)]  # 2, then 3 and 4: all past the hole at 1
    assert tracked == [0, 1, 2, 3, 4, 5]  # only what was delivered waits for an ack
    assert FIRST_DELIVERED == {("usage", 0): 0}  # where the commit guard expects the acks to start
    SOUGHT.clear()


def test_take_batches_admits_a_real_gap_and_counts_it_acknowledged():
    """No record at the next offsets (retention, transaction markers), proven by a reader of our
    own: the jump is delivered and the gap counts as acknowledged, so commits go on."""
    tracked: list[int] = []
    sought: list[tuple] = []
    SOUGHT.clear()
    SOUGHT[("usage", 0)] = 10
    app = _app(tracked, sought)
    batches = asyncio.run(_take(app, [_event(14), _event(15), _event(9)], _no_gap_probe({14, 15}), rounds=1))
    assert batches == [[14, 15]]  # 9 is before where the partition was sought: delivered and acked before
    assert sought == []
    gap = app.consumer._gap[("usage", 0)]
    assert sorted((i.begin, i.end) for i in gap) == [(10, 14)]
    SOUGHT.clear()


def test_take_batches_holds_messages_taken_while_the_flow_is_paused_and_reads_them_again():
    tracked: list[int] = []
    sought: list[tuple] = []
    SOUGHT.clear()
    flow = Flow()
    app = _app(tracked, sought, flow)
    SOUGHT[("usage", 0)] = 0

    class Pausing(Flow):
        calls = 0

        def is_active(self) -> bool:  # paused while the second batch is taken
            Pausing.calls += 1
            return Pausing.calls not in (2, 3)

    app.flow_control = Pausing()
    queued = [_event(0), _event(1), _event(2), _event(1), _event(2)]
    batches = asyncio.run(_take(app, queued, _no_gap_probe({0, 1, 2}), rounds=2))
    assert batches == [[0], [1, 2]]  # 1 and 2 taken while paused, then read again
    assert sought == [(("usage", 0), 1)]
    SOUGHT.clear()


def test_commits_never_skip_a_pending_message():
    """Faust commits up to the end of the first run of acknowledged offsets; a message taken
    but not acknowledged before that run (a partition never committed, or one message past
    the committed offset) must hold the commit back (streams.faust_internals.patches, 5.)."""
    from tokenbrake.streams.faust_internals.patches import _new_offset

    def consumer(committed, acked):
        return SimpleNamespace(_acked=defaultdict(list, {"tp": list(acked)}), _committed_offset=defaultdict(
            lambda: None, {"tp": committed}), _gap=defaultdict(list), _acked_index=defaultdict(set))

    FIRST_DELIVERED.clear()
    FIRST_DELIVERED["tp"] = 0
    assert _new_offset(consumer(None, [5, 6, 7]), "tp") is None  # 0-4 pending, never committed
    assert _new_offset(consumer(None, [0, 1, 2]), "tp") == 3
    assert _new_offset(consumer(100, [101, 102]), "tp") is None  # Faust's own guard lets this through
    assert _new_offset(consumer(100, [100, 101, 103]), "tp") == 102
    FIRST_DELIVERED.clear()


def test_take_batches_ends_when_faust_stops_the_channel():
    async def scenario() -> list[list[int]]:
        queue: asyncio.Queue = asyncio.Queue()
        app = SimpleNamespace(consumer=SimpleNamespace(track_message=lambda m: None),
                              topics=SimpleNamespace(acking_topics=set()), flow_control=Flow(),
                              consumer_generation_id=1)
        stream = SimpleNamespace(app=app, channel=SimpleNamespace(queue=queue), should_stop=False)
        queue.put_nowait(_event(0))

        async def stop() -> None:
            await asyncio.sleep(0.01)
            for getter in queue._getters:  # what Faust's ThrowableQueue does on stop
                getter.set_exception(StopAsyncIteration())

        stopper = asyncio.ensure_future(stop())
        batches = [[e.message.offset for e in batch] async for batch in take_batches(stream, 10, 0)]
        await stopper
        return batches

    assert asyncio.run(scenario()) == [[0]]


def _consumer(full: bool = False, suspended: bool = False) -> SimpleNamespace:
    suspend = asyncio.Event()
    if suspended:
        suspend.set()
    channels = [SimpleNamespace(_queue=None), SimpleNamespace(_queue=SimpleNamespace(full=lambda: full))]
    return SimpleNamespace(suspend_flow=suspend, _stopped=asyncio.Event(), _crashed=asyncio.Event(),
                           app=SimpleNamespace(flow_control=Flow(), topics=SimpleNamespace(_topics=channels)))


def test_delivery_is_inline_only_when_it_cannot_block(monkeypatch):
    faust_path: list[bool] = []

    async def original(self, *coros, timeout=None):  # noqa: ANN001, ANN202
        faust_path.append(True)
        for coro in coros:
            coro.close()

    monkeypatch.setattr(compat, "_original_wait_first", original)

    async def scenario(consumer: SimpleNamespace) -> bool:
        delivered = []

        async def deliver() -> None:
            delivered.append(True)

        await compat._wait_first(consumer, deliver(), consumer.suspend_flow.wait())
        return bool(delivered)

    assert asyncio.run(scenario(_consumer())) is True and faust_path == []
    assert asyncio.run(scenario(_consumer(full=True))) is False and faust_path == [True]
    assert asyncio.run(scenario(_consumer(suspended=True))) is False and faust_path == [True, True]



def test_per_message_lookups_read_once_keep_faust_rules(monkeypatch):
    """Patch 8: the event class comes from the app's settings (read once), and a producer
    buffer over its bound still waits for it to ebb (Faust's own method); under it, no wait."""
    import faust

    app = faust.App("fast-paths", broker="kafka://localhost:1")
    event = compat._create_event(app, b"k", b"v", {}, None)
    assert type(event) is app.conf.Event and (event.key, event.value) == (b"k", b"v")

    waited: list[int] = []

    async def original(self) -> None:  # noqa: ANN001
        waited.append(len(self.pending._queue))

    monkeypatch.setattr(compat, "_original_wait_until_ebb", original)
    buffer = SimpleNamespace(app=app, max_messages=2, pending=SimpleNamespace(_queue=[1, 2]))
    asyncio.run(compat._wait_until_ebb(buffer))
    buffer.pending._queue.append(3)
    asyncio.run(compat._wait_until_ebb(buffer))
    assert waited == [3]
