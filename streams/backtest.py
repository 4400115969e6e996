"""Offline backtest: the live engine over a JSONL file of UsageEvents, in event-time order.

The engine's clock is the events' own time (no wall clock), ticked once per event-time
second, so the same file always yields the same decisions, and the same decisions the
live worker makes on the same events.

The input is **streamed**: events are read, validated and decided one at a time, and
never held as a whole. A file is mostly in time order already (it is a log); a small
reorder buffer (``REORDER_MS`` of event time, a heap) puts the stragglers back in order,
and an event later than that is processed where it arrives, as the live worker would.
The stores' changelog records are taken and dropped at every drain, as the worker takes
them to write them (kept, they grew with every key ever changed or deleted).
So the backtest holds what the live worker holds (the engine's state: dedupe horizon,
open buckets, one model per rule and scope) plus the buffer: memory is bounded by scopes
and by the event rate, not by the number of events (``tokenbrake backtest --rss-at``).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tokenbrake.schemas.codec import dumps, loads
from tokenbrake.schemas.usage import UsageEvent
from tokenbrake.streams.engine import Engine

REORDER_MS = 60_000
#: a CSV trace is stamped from this instant (a Monday, 00:00 UTC), so the same trace always
#: gives the same decisions (the live ``replay`` stamps it in the present instead)
TRACE_START_MS = 1_767_571_200_000  # 2026-01-05T00:00:00Z


def read_events(path: Path, on_error: Callable[[int, str], None] | None = None, fmt: str = "jsonl",
                seed: int = 7, speed: float = 1.0) -> Iterator[UsageEvent]:
    """Valid events in file order, one at a time; ``on_error(line, message)`` for the others.
    ``fmt`` ``azure`` or ``burstgpt``: a trace attributed to tenants as ``replay`` does (seeded)."""
    if fmt != "jsonl":
        from tokenbrake.streams.tools.replay import trace_events

        for lineno, obj in enumerate(trace_events(path, fmt, speed, TRACE_START_MS, seed), 2):
            try:
                yield UsageEvent.model_validate(_strip(obj))
            except ValidationError as exc:
                if on_error is not None:
                    on_error(lineno, str(exc).splitlines()[0])
        return
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield UsageEvent.model_validate(_strip(loads(line)))
            except (ValidationError, ValueError) as exc:
                if on_error is not None:
                    on_error(lineno, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def in_time_order(events: Iterable[UsageEvent], reorder_ms: int = REORDER_MS) -> Iterator[UsageEvent]:
    """Events sorted by ts within a sliding ``reorder_ms`` of event time (stable); the
    buffer holds only the events of the last ``reorder_ms``."""
    heap: list[tuple[int, int, UsageEvent]] = []
    newest = None
    for seq, ev in enumerate(events):
        ts = int(ev.ts.timestamp() * 1000)
        heapq.heappush(heap, (ts, seq, ev))
        newest = ts if newest is None else max(newest, ts)
        while heap and heap[0][0] <= newest - reorder_ms:
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


def load_events(path: Path, fmt: str = "jsonl", seed: int = 7,
                speed: float = 1.0) -> tuple[list[UsageEvent], list[tuple[int, str]]]:
    """A small file as a list, sorted by ts (stable), and (line, error) for invalid lines.
    For tests and small files only: the backtest itself streams (:func:`read_events`)."""
    errors: list[tuple[int, str]] = []
    events = sorted(read_events(path, lambda line, msg: errors.append((line, msg)), fmt, seed, speed),
                    key=lambda e: e.ts)
    return events, errors


def _strip(obj: Any) -> Any:
    # scenario files may carry labels beside the event; they are not part of the contract
    return {k: v for k, v in obj.items() if not k.startswith("_")} if isinstance(obj, dict) else obj


def run(engine: Engine, events: Iterable[UsageEvent]) -> Iterator[dict[str, Any]]:
    """Yield every decision as a JSON-ready dict with ``kind`` = ``control`` or ``alert``."""
    last_tick = 0
    for offset, event in enumerate(events):
        engine.process(event, 0, offset)
        if engine.watermark - last_tick >= 1000:
            engine.tick()
            last_tick = engine.watermark
            yield from _drain(engine)
    engine.tick()
    yield from _drain(engine)


def _drain(engine: Engine) -> Iterator[dict[str, Any]]:
    out = engine.drain()  # also takes the state changes the worker writes to its changelogs: dropped here
    for control in out.controls:
        yield {"kind": "control", **control.model_dump(mode="json", exclude_none=True)}
    for alert in out.alerts:
        yield {"kind": "alert", **alert.model_dump(mode="json", exclude_none=True)}


def write_decisions(decisions: Iterable[dict[str, Any]], output: Path) -> int:
    written = 0
    with open(output, "wb") as fh:
        for decision in decisions:
            fh.write(dumps(decision) + b"\n")
            written += 1
    return written


def rss_mb() -> float:
    """This process's resident memory now (Linux ``/proc``; the peak elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def counted(events: Iterable[UsageEvent], at: Iterable[int], report: Callable[[int, float], None]
            ) -> Iterator[UsageEvent]:
    """Pass events through, calling ``report(n, rss_mb)`` when the n-th event is reached."""
    marks = sorted(set(at))
    written = 0
    for ev in events:
        yield ev
        written += 1
        while marks and written >= marks[0]:
            report(marks.pop(0), rss_mb())
