"""A control decided mid-batch is waited for until it is on the broker (the producer's sender
shares the event loop), but a slow or lost broker does not slow deciding by the wait each time."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace

from tokenbrake.schemas.control import ControlEvent, Reason, Scope
from tokenbrake.streams.runtime.publisher import Publisher


class ControlTopic:
    """Each send returns the broker's acknowledgement, completed only when the test says so."""

    def __init__(self) -> None:
        self.acks: list[asyncio.Future] = []

    async def send(self, key: bytes, value: bytes) -> asyncio.Future:
        self.acks.append(asyncio.get_running_loop().create_future())
        return self.acks[-1]


def _control(tenant: str) -> ControlEvent:
    return ControlEvent(control_id=f"c-{tenant}", issued_at=1_700_000_000_000, scope=Scope(tenant_id=tenant),
                        action="block", reason=Reason(rule="budget", observed=1, threshold=1, period="day"))


def _publisher(topic: ControlTopic) -> Publisher:
    signer = SimpleNamespace(issue=lambda control: control)
    latest = SimpleNamespace(unchanged=lambda control: False, sent=lambda control: None)
    meter = SimpleNamespace(published=lambda emitted: None)
    return Publisher(signer, topic, None, latest, meter, Counter())


def test_waits_for_the_broker_then_stops_waiting_while_it_lags():
    async def scenario() -> list[bool]:
        topic = ControlTopic()
        publisher = _publisher(topic)
        loop = asyncio.get_running_loop()
        seen = []

        await publisher.publish([_control("a")], [])
        loop.call_soon(topic.acks[0].set_result, None)  # the broker answers on the loop's next turn
        await publisher.delivered(5)  # awaited directly: no loop turn unless it waits
        seen.append(topic.acks[0].done())  # True only if it waited for the acknowledgement

        await publisher.publish([_control("b")], [])
        await publisher.delivered(0.01)  # the broker does not answer: the wait gives up
        await publisher.publish([_control("c")], [])
        await asyncio.wait_for(publisher.delivered(3600), 5)  # b still overdue: no second wait
        seen.append(not topic.acks[2].done())

        topic.acks[1].set_result(None)  # the broker caught up: waiting is worth it again
        await publisher.publish([_control("d")], [])
        loop.call_soon(topic.acks[3].set_result, None)
        await publisher.delivered(5)
        seen.append(topic.acks[3].done())
        return seen

    assert asyncio.run(scenario()) == [True, True, True]
