"""Offline backtest: the live engine over a JSONL file of UsageEvents, in event-time order.

The engine's clock is the events' own time (no wall clock), ticked once per event-time
second, so the same file always yields the same decisions, and the same decisions the
live worker makes on the same events.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from schemas.codec import dumps, loads
from schemas.usage import UsageEvent
from streams.engine import Engine

#: a CSV trace is stamped from this instant (a Monday, 00:00 UTC), so the same trace always
#: gives the same decisions (the live ``replay`` stamps it in the present instead)
TRACE_START_MS = 1_767_571_200_000  # 2026-01-05T00:00:00Z


def load_events(path: Path, fmt: str = "jsonl", seed: int = 7,
                speed: float = 1.0) -> tuple[list[UsageEvent], list[tuple[int, str]]]:
    """Valid events sorted by ts (stable), and (line, error) for the invalid ones. ``fmt``
    ``azure`` or ``burstgpt``: a trace attributed to tenants as ``replay`` does (seeded)."""
    if fmt != "jsonl":
        from streams.replay import trace_events

        return _validated(enumerate(trace_events(path, fmt, speed, TRACE_START_MS, seed), 2))
    events, errors = [], []
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                events.append(UsageEvent.model_validate(_strip(loads(line))))
            except (ValidationError, ValueError) as exc:
                errors.append((lineno, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    events.sort(key=lambda e: e.ts)
    return events, errors


def _validated(numbered: Iterable[tuple[int, dict[str, Any]]]) -> tuple[list[UsageEvent], list[tuple[int, str]]]:
    events, errors = [], []
    for lineno, obj in numbered:
        try:
            events.append(UsageEvent.model_validate(_strip(obj)))
        except ValidationError as exc:
            errors.append((lineno, str(exc).splitlines()[0]))
    events.sort(key=lambda e: e.ts)
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
    out = engine.drain()
    for control in out.controls:
        yield {"kind": "control", **control.model_dump(mode="json", exclude_none=True)}
    for alert in out.alerts:
        yield {"kind": "alert", **alert.model_dump(mode="json", exclude_none=True)}


def write_decisions(decisions: Iterable[dict[str, Any]], output: Path) -> int:
    n = 0
    with open(output, "wb") as fh:
        for decision in decisions:
            fh.write(dumps(decision) + b"\n")
            n += 1
    return n
