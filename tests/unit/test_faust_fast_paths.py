"""The two places the worker steps around Faust's per-message machinery keep its rules:
stale events are skipped unacked, pending acks are tracked, and a delivery that could block
still goes through Faust's interruptible path. (The integration tests run both for real.)"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from tokenbrake.streams.faust_internals import patches as compat
from tokenbrake.streams.faust_internals.batches import take_batches
from tokenbrake.streams.faust_internals.patches import FIRST_DELIVERED


class Flow:
    def __init__(self, active: bool = True) -> None:
        self.active = active

    def is_active(self) -> bool:
        return self.active


def _event(offset: int, generation: int = 1) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(offset=offset, generation_id=generation, tracked=False,
                                                   topic="usage", tp=("usage", 0)))


def test_take_batches_drains_the_queue_skips_stale_events_and_tracks_the_rest():
    async def scenario() -> tuple[list[list[int]], list[int]]:
        queue: asyncio.Queue = asyncio.Queue()
        tracked: list[int] = []
        app = SimpleNamespace(consumer=SimpleNamespace(track_message=lambda m: tracked.append(m.offset)),
                              topics=SimpleNamespace(acking_topics={"usage"}), flow_control=Flow(),
                              consumer_generation_id=1)
        stream = SimpleNamespace(app=app, channel=SimpleNamespace(queue=queue), should_stop=False)
        for event in (_event(0), _event(1, generation=0), _event(2), _event(3), _event(4)):
            queue.put_nowait(event)
        batches = []
        async for batch in take_batches(stream, max_events=3, within_s=0):
            batches.append([e.message.offset for e in batch])
            if len(batches) == 2:
                break
        return batches, tracked

    batches, tracked = asyncio.run(scenario())
    assert batches == [[0, 2], [3, 4]]  # at most 3 taken at a time; offset 1 is from an old generation
    assert tracked == [0, 2, 3, 4]
    assert FIRST_DELIVERED == {("usage", 0): 0}  # where the commit guard expects the acks to start


def test_commits_never_skip_a_pending_message():
    """Faust commits up to the end of the first run of acknowledged offsets; a message taken
    but not acknowledged before that run (a partition never committed, or one message past
    the committed offset) must hold the commit back (streams.faust_internals.patches, 5.)."""
    from collections import defaultdict

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
    channel = SimpleNamespace(queue=SimpleNamespace(full=lambda: full))
    return SimpleNamespace(suspend_flow=suspend, _stopped=asyncio.Event(), _crashed=asyncio.Event(),
                           app=SimpleNamespace(flow_control=Flow(), topics=[channel]))


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

