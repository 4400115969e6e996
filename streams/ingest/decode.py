"""Bytes off the usage topic -> valid UsageEvents, and a reason for everything else.

A message is one JSON object or a JSON array of them. The fast path validates a whole
array at once; if any element is bad, elements are validated one by one so every valid
event is still counted and each bad one is dead-lettered with its own error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError

from tokenbrake.schemas.codec import JSONDecodeError, dumps, loads
from tokenbrake.schemas.usage import UsageEvent

log = logging.getLogger("tokenbrake.ingest")
_ONE = UsageEvent.model_validate_json
_MANY = TypeAdapter(list[UsageEvent]).validate_json
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str  # short machine-readable: not_json, invalid_event, empty, too_large, late, ...
    error: str  # human-readable detail
    payload: bytes  # the original bytes (the whole message, or the one bad array element)


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(event)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


_warned_unknown: set[str] = set()


def note_unknown_fields(events: list[UsageEvent], counts: dict[str, int]) -> None:
    """Count events that carry fields the contract does not know (accepted, ignored), and name each
    new field once in a warning: a producer ahead of the worker, or a typo to fix."""
    for event in events:
        extra = event.__pydantic_extra__
        if extra:
            counts["unknown_fields"] = counts.get("unknown_fields", 0) + 1
            new = sorted(set(extra) - _warned_unknown)
            if new and len(_warned_unknown) < 1000:
                _warned_unknown.update(new)
                log.warning("usage events carry fields the contract does not know; accepted and ignored",
                            extra={"fields": new, "example_event_id": event.event_id})


def decode(value: bytes | None) -> tuple[list[UsageEvent], list[Rejected]]:
    if not value:
        return [], [Rejected("empty", "empty message value", value or b"")]
    if len(value) > MAX_MESSAGE_BYTES:
        return [], [Rejected("too_large", f"message of {len(value)} bytes exceeds {MAX_MESSAGE_BYTES}", value)]
    head = value.lstrip()[:1]
    try:
        if head == b"[":
            events = _MANY(value)
            return (events, []) if events else ([], [Rejected("empty", "empty JSON array", value)])
        return [_ONE(value)], []
    except ValidationError as exc:
        if exc.errors()[0]["type"] == "json_invalid":
            return [], [Rejected("not_json", f"not valid JSON: {exc.errors()[0]['msg']}", value)]
        if head != b"[":
            return [], [Rejected("invalid_event", _explain(exc), value)]
    try:
        items = loads(value)
    except JSONDecodeError as exc:
        return [], [Rejected("not_json", f"not valid JSON: {exc}", value)]
    if not isinstance(items, list):
        return [], [Rejected("invalid_event", "expected a JSON object or array of objects", value)]
    good: list[UsageEvent] = []
    bad: list[Rejected] = []
    for index, item in enumerate(items):
        raw = dumps(item)
        try:
            good.append(_ONE(raw))
        except ValidationError as exc:
            bad.append(Rejected("invalid_event", f"array element {index}: {_explain(exc)}", raw))
    if not items:
        bad.append(Rejected("empty", "empty JSON array", value))
    return good, bad
