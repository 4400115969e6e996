"""A kill switch stopped while it is still starting (a service shutting down during its own
start-up, the worker stopping while it reads the control topic) ends its start with a clear
error and leaves nothing open; it used to fail with an AttributeError from its own clean-up."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.integration.conftest import run
from tokenbrake.clients import KillSwitch
from tokenbrake.streams.broker import ensure_topics


async def started_consumer(ks: KillSwitch) -> None:
    """Let the start run until it has made its consumer (before its first network wait)."""
    for _ in range(1000):  # a few loop turns in practice; bounded so a regression fails, not hangs
        if ks._consumer is not None:
            return
        await asyncio.sleep(0)  # a yield to the start task, not a timed wait
    raise AssertionError("start() never made its consumer")


def test_a_stop_during_start_ends_the_start_cleanly(broker):  # noqa: ANN001
    topic = f"control-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[BaseException | None, object]:
        await ensure_topics(broker.bootstrap, {topic: 1}, {topic})
        ks = KillSwitch(broker.bootstrap, topic, keys="k1:test-secret-of-16-chars")
        starting = asyncio.ensure_future(ks.start())
        await started_consumer(ks)
        await ks.stop()
        try:
            await starting
        except Exception as exc:  # noqa: BLE001 - the error itself is what is checked
            return exc, ks._consumer
        return None, ks._consumer

    error, consumer = run(scenario())
    assert error is not None and not isinstance(error, AttributeError), repr(error)
    assert consumer is None  # nothing left open behind


def test_a_start_after_a_failed_start_works(broker):  # noqa: ANN001
    topic = f"control-{uuid.uuid4().hex[:8]}"

    async def scenario() -> bool:
        await ensure_topics(broker.bootstrap, {topic: 1}, {topic})
        ks = KillSwitch(broker.bootstrap, topic, keys="k1:test-secret-of-16-chars")
        starting = asyncio.ensure_future(ks.start())
        await started_consumer(ks)
        await ks.stop()
        with pytest.raises(Exception):  # noqa: B017 - whichever error aiokafka or the check raises
            await starting
        await ks.start()  # the same object starts again, reads the (empty) history and serves
        try:
            return ks.loaded
        finally:
            await ks.stop()

    assert run(scenario()) is True


def test_the_fetch_wait_is_the_services_choice(broker):  # noqa: ANN001
    """A large fleet on Kafka polls less with a longer wait; out of range is one clear error."""
    topic = f"control-{uuid.uuid4().hex[:8]}"

    async def scenario() -> int:
        await ensure_topics(broker.bootstrap, {topic: 1}, {topic})
        ks = KillSwitch(broker.bootstrap, topic, keys="k1:test-secret-of-16-chars", fetch_max_wait_ms=500)
        await ks.start()
        try:
            return ks._consumer._fetch_max_wait_ms
        finally:
            await ks.stop()

    assert run(scenario()) == 500
    with pytest.raises(ValueError, match="fetch_max_wait_ms must be 1-5000, not 0"):
        KillSwitch(broker.bootstrap, topic, keys="k1:test-secret-of-16-chars", fetch_max_wait_ms=0)
