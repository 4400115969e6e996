"""Every input agent's loop: batches off its stream, handed to its handler; an agent that fails
stops the worker with exit 1 (a live process that decides nothing is worse than a restart:
its unacknowledged messages are read again by the next one)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tokenbrake.streams.faust_internals.batches import take_batches

log = logging.getLogger("tokenbrake.worker")


async def run_input(runtime: Any, stream: Any, name: str, handle: Callable[[list[Any]], Awaitable[Any]]) -> None:
    settings = runtime.settings
    try:
        async for events in take_batches(stream, settings.batch_max, settings.batch_within_s):
            await handle(events)
    except Exception as exc:
        log.critical("the %s agent failed; stopping the worker (exit 1) so a supervisor restarts it: "
                     "unacknowledged messages will be read again", name, exc_info=True)
        runtime._stopping = True
        await runtime.app.crash(exc)
        raise
