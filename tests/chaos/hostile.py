"""Hostile messages for the usage topic, kept as data: (kind, bytes) built around valid events.

Each case says how many valid events it carries (they must be counted, once) and how many
dead letters it must produce at least (each with its reason). ``VALID`` stands for a fresh
valid event's JSON text, ``NOW`` for the current time in epoch milliseconds."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

MB = 1024 * 1024
MAX_MESSAGE_BYTES = 8 * MB  # the documented limit (streams/ingest/decode.py)
UNPRICED_TENANT = "hx-unpriced"  # counted, priced by the fallback: compared by requests only


@dataclass(frozen=True)
class Case:
    kind: str
    value: bytes | None
    valid_inside: list[dict[str, Any]]  # valid events in the message (to be counted)
    dead_letters: int = 1  # at least this many dead letters, each with a reason
    counted_only: bool = False  # a valid but odd event (unknown model): counted, not dead-lettered


def _j(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _with(valid: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**valid, **changes}


def _raw_field(valid: dict[str, Any], name: str, raw: str) -> bytes:
    """The event's JSON with one field's value replaced by raw JSON text (1e30, NaN, ...)."""
    marker = "__RAW__"
    return _j({**valid, name: marker}).replace(f'"{marker}"'.encode(), raw.encode())


def cases(valid: Callable[[], dict[str, Any]]) -> list[Case]:
    """Every hostile kind; ``valid()`` returns a new valid event (dict) each call."""
    now = int(time.time() * 1000)
    v = valid
    out: list[Case] = []

    def add(kind: str, value: bytes | None, inside: list[dict[str, Any]] | None = None, dead: int = 1) -> None:
        out.append(Case(kind, value, inside or [], dead))

    add("empty value", b"")
    add("tombstone (null value)", None)
    add("whitespace only", b"  \n\t ")
    add("not JSON", b"{not json")
    add("truncated event", _j(v())[:40])
    add("JSON null", b"null")
    add("JSON number", b"42")
    add("JSON string", b'"hello"')
    add("JSON true", b"true")
    add("empty object", b"{}")
    add("empty array", b"[]")
    add("array of nulls", b"[null, null]", dead=2)
    add("array of numbers", b"[1, 2, 3]", dead=3)
    add("nested array of events", _j([[v()]]))
    add("missing event_id", _j({k: x for k, x in v().items() if k != "event_id"}))
    add("event_id an integer", _j(_with(v(), event_id=12345)))
    add("ts a word", _j(_with(v(), ts="yesterday")))
    add("ts a float", _raw_field(v(), "ts", "1764000000000.5"))
    add("ts integer 1e30", _raw_field(v(), "ts", "1" + "0" * 30))
    ok1, ok2 = v(), v()
    add("array: a ts of 1e30 between two valid events",
        b"[" + _j(ok1) + b"," + _raw_field(v(), "ts", "1" + "0" * 30) + b"," + _j(ok2) + b"]", [ok1, ok2])
    add("ts negative", _j(_with(v(), ts=-1)))
    add("ts two days ahead", _j(_with(v(), ts=now + 2 * 86_400_000)))
    add("ts two days ago (older than the dedupe horizon)", _j(_with(v(), ts=now - 2 * 86_400_000)))
    add("ts in 1970", _j(_with(v(), ts=1000)))
    add("ts boolean", _j(_with(v(), ts=True)))
    add("ts without zone", _j(_with(v(), ts="2026-01-01T10:00:00")))
    add("negative tokens", _j(_with(v(), input_tokens=-5)))
    add("tokens a float", _raw_field(v(), "input_tokens", "10.5"))
    add("tokens a string", _j(_with(v(), input_tokens="100")))
    add("tokens a huge integer", _raw_field(v(), "input_tokens", "1" + "0" * 40))
    add("tokens NaN", _raw_field(v(), "output_tokens", "NaN"))
    add("tokens Infinity", _raw_field(v(), "output_tokens", "Infinity"))
    add("tokens over the contract's bound", _j(_with(v(), output_tokens=10**9)))
    add("cached tokens above input", _j(_with(v(), input_tokens=10, cached_input_tokens=20)))
    add("reported cost negative", _j(_with(v(), reported_cost_usd="-1")))
    add("reported cost a float", _raw_field(v(), "reported_cost_usd", "0.1"))
    add("reported cost 1e400", _j(_with(v(), reported_cost_usd="1e400")))
    add("reported cost NaN text", _j(_with(v(), reported_cost_usd="NaN")))
    surprise = _with(v(), surprise=1)  # the contract accepts and ignores unknown fields (a newer producer)
    add("unknown field (valid: accepted, the field ignored)", _j(surprise), [surprise], dead=0)
    add("tenant with the key separator", _j(_with(v(), tenant_id="a|b")))
    add("tenant empty", _j(_with(v(), tenant_id="")))
    add("tenant 10 KB long", _j(_with(v(), tenant_id="t" * 10_000)))
    add("NUL in user_id", _j(_with(v(), user_id="u\x00x")))
    add("invalid UTF-8", _j(v()).replace(b'"feature_id":"', b'"feature_id":"\xff\xfe'))
    add("lone surrogate escape", _j(v()).replace(b'"feature_id":"', b'"feature_id":"\\ud800'))
    add("byte order mark before the JSON", b"\xef\xbb\xbf" + _j(v()))
    add("status uppercase junk", _j(_with(v(), status="OK!!")))
    add("attempt a million", _j(_with(v(), attempt=10**6)))
    add("latency negative", _j(_with(v(), latency_ms=-1)))
    add("cache_hit a list", _j(_with(v(), cache_hit=[1])))
    add("event an array of pairs", _j(list(v().items())))
    add("nested junk 100,000 levels deep", b"[" * 100_000 + b"]" * 100_000)
    add("nested objects in a field", _j(_with(v(), feature_id={"a": {"b": [1, {"c": None}]}})))
    add("trailing garbage", _j(v()) + b"xyz")
    add("two JSON documents", _j(v()) + _j(v()))
    ok3 = v()
    add("array: a valid event and a string", _j([ok3, "junk"]), [ok3])
    add("array of 50 bad elements", _j([{"event_id": f"bad{i}"} for i in range(50)]), dead=50)
    pad = MAX_MESSAGE_BYTES + 1 - len(b'{"pad":""}')
    add("just over the 8 MB limit", b'{"pad":"' + b"x" * pad + b'"}')
    events = [v() for _ in range(100_000)]
    add("array of 100,000 events", _j(events))
    padded = _j([_with(v(), feature_id="f" * 60) for _ in range(80_000)])
    add("20 MB array", padded + b" " * max(0, 20 * MB - len(padded)))
    out.append(Case("unknown model (valid: counted, priced by the fallback)",
                    _j(_with(v(), tenant_id=UNPRICED_TENANT, model="gpt-99-imaginary")), [], 0, counted_only=True))
    return out
