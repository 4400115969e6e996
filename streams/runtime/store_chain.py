"""The chunk's storing steps, off the deciding path and in the order the chunks were drained.

When a chunk ends, its changelog records are sent and its rows handed to the sink (steps 3-4
of the worker's ordering contract). Done inline, that work (tens of milliseconds for a chunk of
thousands of events) blocked deciding: a message that crossed a budget meanwhile waited for it,
and so did the control. Here each chunk's storing is a job that runs after the previous one's,
while the agent decides the next messages (``send_packed`` yields to the event loop between
slices of records).

Order is all that matters for exactness: a key's records reach the broker in the order its
values were drained (each job waits for the previous one), a chunk's messages are acknowledged
only after its own records and rows are stored (the sink's rule, unchanged), and at most
``depth`` jobs are pending (the agent waits for room, so memory and the unacknowledged window
stay bounded).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("tokenbrake.worker")


class StoreChain:
    """Jobs run one after another in the order given to :meth:`then`, each in its own task."""

    def __init__(self, depth: int = 2, on_error: Callable[[BaseException], None] | None = None) -> None:
        self.depth = depth
        self.on_error = on_error
        self._jobs: list[asyncio.Future] = []  # pending, oldest first

    @property
    def pending(self) -> int:
        self._jobs = [job for job in self._jobs if not job.done()]
        return len(self._jobs)

    async def room(self) -> None:
        """Wait until fewer than ``depth`` jobs are pending."""
        while self.pending >= self.depth:
            await asyncio.wait([self._jobs[0]])

    def then(self, job: Callable[[], Awaitable[None]]) -> asyncio.Future:
        """Run ``job`` once every job given before it has finished."""
        previous = self._jobs[-1] if self._jobs else None

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])  # its failure is reported by its own task
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("storing a chunk failed")
                if self.on_error is not None:
                    self.on_error(exc)
                raise

        task = asyncio.ensure_future(run())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: no "never retrieved" noise
        self._jobs.append(task)
        return task

    async def idle(self) -> None:
        """Wait until every job given so far has finished."""
        while self.pending:
            await asyncio.wait(list(self._jobs))
