"""Seeded workloads and their expected totals, computed without the engine.

Costs come from the genai-prices catalog's own ``calc_price`` (a Decimal in USD per call),
rounded half-up to nano-dollars once per call: the engine's integer rates are not used.
User ids are what the reporter sends: ``hash_user(raw, salt)``; every raw id ends in
``@example.com`` so the privacy scan can look for that one string everywhere."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from genai_prices import Usage, calc_price

from tokenbrake.clients.reporter import hash_user
from tokenbrake.schemas.codec import dumps

SALT = b"chaos-salt"
RAW_ID_MARK = "@example.com"
MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku"),
          ("anthropic", "claude-sonnet-4-5")]
NANO = Decimal("0.000000001")


def cost_nanos(provider: str, model: str, input_tokens: int, output_tokens: int) -> int:
    price = calc_price(Usage(input_tokens=input_tokens, output_tokens=output_tokens), model_ref=model,
                       provider_id=provider).total_price
    return int((Decimal(price) / NANO).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def raw_user(seed: int, n: int) -> str:
    return f"user-{seed}-{n:05d}{RAW_ID_MARK}"


def event_window(now_ms: int, span_ms: int = 600_000) -> tuple[int, int]:
    """[start, end) of event times: the last ``span_ms`` before now, within today (UTC)."""
    midnight = now_ms - now_ms % 86_400_000
    start = max(now_ms - span_ms, midnight)
    return start, max(now_ms - 1000, start + 1)


@dataclass
class Workload:
    seed: int
    events: list[dict[str, Any]]
    messages: list[tuple[bytes, bytes, int]]  # (key, value, number of events)
    tenants: list[str]
    expected: Expected = field(init=False)

    def __post_init__(self) -> None:
        self.expected = Expected.of(self.events)


def make_workload(n: int, seed: int, tenants: int = 12, users: int = 3000, prefix: str = "c",
                  single_share: float = 0.1, now_ms: int | None = None) -> Workload:
    """``n`` events over ``tenants`` tenants (volumes 1x-1.4x), sent as per-tenant JSON arrays
    of 1-200 events, and ``single_share`` of them one per message, interleaved."""
    rng = random.Random(seed)
    start, end = event_window(now_ms or int(time.time() * 1000))
    names = [f"{prefix}{seed}-t{i:02d}" for i in range(tenants)]
    weights = [1 + 0.4 * i / max(tenants - 1, 1) for i in range(tenants)]
    hashed = [hash_user(raw_user(seed, u), SALT) for u in range(users)]
    events = []
    for i in range(n):
        provider, model = MODELS[rng.randrange(len(MODELS))]
        events.append({"event_id": f"{prefix}{seed}-{i}", "ts": start + (end - start) * i // n,
                       "tenant_id": rng.choices(names, weights)[0], "feature_id": f"f{rng.randrange(5)}",
                       "user_id": hashed[rng.randrange(users)], "provider": provider, "model": model,
                       "input_tokens": rng.randrange(50, 4000), "output_tokens": rng.randrange(10, 600)})
    return Workload(seed, events, pack(events, rng, single_share), names)


def pack(events: list[dict[str, Any]], rng: random.Random, single_share: float) -> list[tuple[bytes, bytes, int]]:
    messages: list[tuple[bytes, bytes, int]] = []
    open_arrays: dict[str, tuple[int, list]] = {}
    for e in events:
        tenant = e["tenant_id"]
        if rng.random() < single_share:
            messages.append((tenant.encode(), dumps(e), 1))
            continue
        size, chunk = open_arrays.setdefault(tenant, (rng.randint(1, 200), []))
        chunk.append(e)
        if len(chunk) >= size:
            messages.append((tenant.encode(), dumps(chunk), len(chunk)))
            del open_arrays[tenant]
    messages.extend((t.encode(), dumps(c), len(c)) for t, (_, c) in open_arrays.items())
    return messages


@dataclass
class Expected:
    """Exact totals per view: [requests, cost in nano-dollars]."""

    tenants: dict[str, list[int]]
    minutes: dict[tuple[str, int], list[int]]  # (tenant, minute start in epoch seconds)
    user_days: dict[tuple[str, str, str], list[int]]  # (tenant, hashed user, YYYY-MM-DD)
    event_cost: dict[str, int]

    @classmethod
    def of(cls, events: list[dict[str, Any]]) -> Expected:
        tenants: dict = defaultdict(lambda: [0, 0])
        minutes: dict = defaultdict(lambda: [0, 0])
        user_days: dict = defaultdict(lambda: [0, 0])
        event_cost: dict[str, int] = {}
        cache: dict[tuple, int] = {}
        for e in events:
            key = (e["provider"], e["model"], e["input_tokens"], e["output_tokens"])
            cost = cache.get(key)
            if cost is None:
                cost = cache[key] = cost_nanos(*key)
            event_cost[e["event_id"]] = cost
            day = datetime.fromtimestamp(e["ts"] // 1000, tz=UTC).date().isoformat()
            for bucket in (tenants[e["tenant_id"]], minutes[(e["tenant_id"], e["ts"] // 60_000 * 60)],
                           user_days[(e["tenant_id"], e["user_id"], day)]):
                bucket[0] += 1
                bucket[1] += cost
        return cls(dict(tenants), dict(minutes), dict(user_days), event_cost)

    @property
    def requests(self) -> int:
        return sum(v[0] for v in self.tenants.values())

    def policy(self) -> tuple[str, Decimal]:
        """A per-tenant day budget that some tenants cross during the run (downgrade at the
        limit, block at 1.5x, warn at half), and the limit."""
        totals = sorted(v[1] for v in self.tenants.values())
        limit = Decimal(totals[len(totals) // 2]) * NANO
        limit = limit.quantize(Decimal("0.01"))
        for _ in range(100):  # keep every tenant clear of a threshold (no tie decided by rounding)
            near = any(abs(Decimal(t) * NANO - limit * at) < limit * Decimal("0.005") for t in totals
                       for at in (Decimal(1), Decimal("1.5")))
            if not near:
                break
            limit += Decimal("0.37")
        text = (f"budgets:\n  - id: chaos-day\n    scope: {{tenant: \"*\"}}\n    period: day\n"
                f"    limit_usd: \"{limit}\"\n    warn_at: [0.5]\n    on_exceed:\n"
                f"      - {{at: 1.0, action: downgrade, to_model: gpt-4o-mini}}\n"
                f"      - {{at: 1.5, action: block}}\n")
        return text, limit

    def controls(self, limit: Decimal) -> set[tuple[str, str]]:
        """(tenant, action) the policy must have issued, from the exact totals."""
        out = set()
        for tenant, (_, cost) in self.tenants.items():
            usd = Decimal(cost) * NANO
            if usd >= limit:
                out.add((tenant, "downgrade"))
            if usd >= limit * Decimal("1.5"):
                out.add((tenant, "block"))
        return out


def diff(expected: dict[Any, list[int]], observed: dict[Any, list[int]]) -> dict[str, int]:
    """Requests and nano-dollars missing from / beyond ``observed``, and keys that differ."""
    lost = double = lost_cost = double_cost = wrong = 0
    for key in expected.keys() | observed.keys():
        e, o = expected.get(key, [0, 0]), observed.get(key, [0, 0])
        if e != o:
            wrong += 1
        lost += max(0, e[0] - o[0])
        double += max(0, o[0] - e[0])
        lost_cost += max(0, e[1] - o[1])
        double_cost += max(0, o[1] - e[1])
    return {"requests": sum(v[0] for v in observed.values()), "lost": lost, "double": double,
            "lost_nanos": lost_cost, "double_nanos": double_cost, "keys_wrong": wrong}
