"""Each chunk's storing runs off the deciding path, after the chunks drained before it
(streams.runtime.store_chain): the order of a key's changelog records depends on it."""

from __future__ import annotations

import asyncio

import pytest

from tokenbrake.streams.runtime.store_chain import StoreChain


def test_jobs_finish_in_the_order_given_even_when_an_earlier_one_is_slower():
    async def scenario() -> list[str]:
        chain, log = StoreChain(depth=3), []
        first_may_finish = asyncio.Event()

        async def first() -> None:
            log.append("first starts")
            await first_may_finish.wait()  # the broker is slow for the first chunk
            log.append("first stored")

        async def second() -> None:
            log.append("second starts")

        chain.then(first)
        chain.then(second)
        for _ in range(5):
            await asyncio.sleep(0)  # the agent decides meanwhile: the second job must not start
        log.append("deciding")
        first_may_finish.set()
        await chain.idle()
        return log

    assert asyncio.run(scenario()) == ["first starts", "deciding", "first stored", "second starts"]


def test_room_bounds_the_pending_jobs():
    async def scenario() -> tuple[bool, bool, int]:
        chain = StoreChain(depth=2)
        gate = asyncio.Event()
        chain.then(gate.wait)
        chain.then(gate.wait)
        waiting = asyncio.ensure_future(chain.room())
        for _ in range(5):
            await asyncio.sleep(0)
        blocked = not waiting.done()
        gate.set()
        await waiting
        await chain.idle()
        return blocked, waiting.done(), chain.pending

    assert asyncio.run(scenario()) == (True, True, 0)


def test_a_failed_job_is_reported_and_the_next_still_runs_after_it():
    async def scenario() -> tuple[list[str], list[str]]:
        errors: list[str] = []
        chain, log = StoreChain(on_error=lambda exc: errors.append(str(exc))), []

        async def broken() -> None:
            log.append("broken")
            raise RuntimeError("broker refused the batch")

        async def after() -> None:
            log.append("after")

        failed = chain.then(broken)
        chain.then(after)
        await chain.idle()
        with pytest.raises(RuntimeError):
            failed.result()
        return log, errors

    assert asyncio.run(scenario()) == (["broken", "after"], ["broker refused the batch"])
