"""Seeded, labelled scenarios for evaluating the detectors.

Clean traffic: four tenants with daily and weekly seasonality, token sizes drawn from the
Azure conversation trace, Zipf-shaped users, 1% failed calls retried once. Incidents are
injected after a 7-day warm-up, each with a ground-truth label (primary ``rule``, ``also``
= other rules that may rightly fire, ``scope``, ``start``, ``end``):

retry storm, silent model switch (a feature moved to a model ~16x the price), context
bloat, a single 200k-token call, a tenant batch export that triples spend for a day, a
runaway agent loop, and one abusive heavy user.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DAY_MS, HOUR_MS, MIN_MS = 86_400_000, 3_600_000, 60_000
#: a Monday, so weekly seasonality lines up with real weekdays
EPOCH = int(datetime(2026, 9, 7, tzinfo=UTC).timestamp() * 1000)
TENANTS = {"acme": 8.0, "globex": 6.0, "initech": 4.0, "umbrella": 2.0}  # calls/min at the daily peak
FEATURES = {"chat": ("openai", "gpt-4o", 0.55), "summarize": ("openai", "gpt-4o-mini", 0.3),
            "search": ("anthropic", "claude-3-5-haiku", 0.15)}
SCENARIO_POLICIES = """\
# Detector evaluation: no budgets, the default detectors, a $0.25 per-call cap.
request_cost_caps:
  - {id: quarter-dollar-call, scope: {tenant: "*"}, max_usd: "0.25"}
"""


@dataclass
class Incident:
    kind: str
    rule: str
    tenant: str
    feature: str | None
    start: int
    end: int
    also: list[str] = field(default_factory=list)


def azure_tokens(path: Path) -> list[tuple[int, int]]:
    with open(path, newline="") as fh:
        return [(int(r["ContextTokens"]), int(r["GeneratedTokens"])) for r in csv.DictReader(fh)]


def _diurnal(ts: int) -> float:
    hour = (ts % DAY_MS) / HOUR_MS
    weekday = ((ts - EPOCH) // DAY_MS) % 7
    day = 0.25 + 0.75 * math.exp(-(((hour - 14) / 5) ** 2))  # peak at 14:00 UTC
    return day * (0.45 if weekday >= 5 else 1.0)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    k, p, threshold = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


def plan_incidents(rng: random.Random, days: int) -> list[Incident]:
    """One of each incident, at seeded times on the days after the 7-day warm-up."""
    def at(day: int, lo_h: float, hi_h: float) -> int:
        return EPOCH + day * DAY_MS + int(rng.uniform(lo_h, hi_h) * HOUR_MS) // MIN_MS * MIN_MS

    last = days - 1
    d7, d8 = 7, min(8, last)
    storm = at(d7, 9, 17)
    switch = at(d8, 8, 12)
    bloat = at(d7, 1, 4)
    agent = at(d8, 13, 18)
    heavy = at(d7, 6, 10)
    return [
        Incident("retry_storm", "retry_storm", "globex", "chat", storm, storm + 25 * MIN_MS, ["cost_rate"]),
        Incident("model_switch", "cost_rate", "acme", "summarize", switch, switch + 6 * HOUR_MS,
                 ["spend_spike"]),
        Incident("context_bloat", "token_inflation", "globex", "chat", bloat, bloat + 30 * HOUR_MS,
                 ["spend_spike", "cost_rate"]),
        Incident("huge_call", "request_cost_cap", "umbrella", "chat", at(d8, 2, 22), 0, ["cost_rate"]),
        Incident("batch_export", "spend_spike", "initech", None, EPOCH + d7 * DAY_MS, EPOCH + (d7 + 1) * DAY_MS,
                 ["cost_rate", "heavy_user"]),
        Incident("agent_loop", "cost_rate", "umbrella", "chat", agent, agent + 40 * MIN_MS,
                 ["spend_spike", "token_inflation", "heavy_user"]),
        Incident("heavy_user", "heavy_user", "acme", None, heavy, heavy + 6 * HOUR_MS,
                 ["spend_spike", "cost_rate", "token_inflation"]),
    ]


def generate(seed: int, days: int, tokens: list[tuple[int, int]], incidents: bool = True,
             scale: float = 1.0) -> tuple[Iterator[dict[str, Any]], list[Incident]]:
    rng = random.Random(seed)
    plan = plan_incidents(rng, days) if incidents else []
    for inc in plan:
        if inc.kind == "huge_call":
            inc.end = inc.start + MIN_MS
    by_kind = {inc.kind: inc for inc in plan}
    return _events(rng, days, tokens, by_kind, scale), plan


def _events(rng: random.Random, days: int, tokens: list[tuple[int, int]], inc: dict[str, Incident],
            scale: float) -> Iterator[dict[str, Any]]:
    users = {t: [f"{t[:2]}-u{i:03d}" for i in range(300)] for t in TENANTS}
    weights = [1 / (i + 1) ** 0.8 for i in range(300)]
    seq = 0

    def active(kind: str, ts: int) -> Incident | None:
        i = inc.get(kind)
        return i if i is not None and i.start <= ts < i.end else None

    def call(ts: int, tenant: str, feature: str, provider: str, model: str, user: str, inp: int, out: int,
             attempt: int = 0, status: str = "ok", logical: str | None = None, version: str = "v1") -> dict:
        nonlocal seq
        seq += 1
        return {"event_id": f"s{seq}", "ts": ts, "tenant_id": tenant, "feature_id": feature, "user_id": user,
                "provider": provider, "model": model, "input_tokens": inp, "output_tokens": out,
                "logical_call_id": logical or f"s{seq}", "attempt": attempt, "status": status,
                "prompt_version": version, "latency_ms": 300 + out * 15}

    for minute in range(days * 1440):
        t0 = EPOCH + minute * MIN_MS
        season = _diurnal(t0)
        batch: list[dict] = []
        for tenant, peak in TENANTS.items():
            rate = peak * season * scale
            if (e := active("batch_export", t0)) and e.tenant == tenant:
                rate *= 3
            for _ in range(_poisson(rng, rate)):
                ts = t0 + rng.randrange(MIN_MS)
                feature = rng.choices(list(FEATURES), [f[2] for f in FEATURES.values()])[0]
                provider, model, _ = FEATURES[feature]
                inp, out = tokens[rng.randrange(len(tokens))]
                version = "v1"
                if (e := active("model_switch", ts)) and (e.tenant, e.feature) == (tenant, feature):
                    model = "gpt-4o"  # a release quietly moved this feature to a ~16x pricier model
                if (e := active("context_bloat", ts)) and (e.tenant, e.feature) == (tenant, feature):
                    inp, version = inp * 2 + 400, "v2"
                user = rng.choices(users[tenant], weights)[0]
                logical = f"c{minute}-{rng.getrandbits(40):x}"
                storm = active("retry_storm", ts)
                if storm and (storm.tenant, storm.feature) == (tenant, feature):
                    for attempt in range(4):  # the provider is down and the client retries hard
                        failed = attempt < 3 and rng.random() < 0.8
                        batch.append(call(ts + attempt * 1500, tenant, feature, provider, model, user, inp,
                                          0 if failed else out, attempt, "error" if failed else "ok", logical))
                        if not failed:
                            break
                    continue
                if rng.random() < 0.01:
                    batch.append(call(ts, tenant, feature, provider, model, user, inp, 0, 0, "error", logical))
                    batch.append(call(ts + 800, tenant, feature, provider, model, user, inp, out, 1, "ok", logical))
                    continue
                batch.append(call(ts, tenant, feature, provider, model, user, inp, out, 0, "ok", logical, version))
        if (e := active("agent_loop", t0)) is not None:
            step = (t0 - e.start) // MIN_MS
            for i in range(30):  # an agent stuck in a loop, its context growing every turn
                batch.append(call(t0 + i * 2000, e.tenant, "chat", "openai", "gpt-4o", "agent-runner",
                                  3000 + step * 400, 600, 0, "ok"))
        if (e := active("heavy_user", t0)) is not None:
            for _ in range(_poisson(rng, 6)):
                inp, out = tokens[rng.randrange(len(tokens))]
                batch.append(call(t0 + rng.randrange(MIN_MS), e.tenant, "chat", "openai", "gpt-4o", "abuser-1",
                                  inp * 3, out * 2))
        if (e := inc.get("huge_call")) is not None and e.start == t0:
            batch.append(call(t0 + 1234, e.tenant, e.feature or "chat", "openai", "gpt-4o", "u-big", 200_000, 2_000))
        batch.sort(key=lambda ev: ev["ts"])
        yield from batch


def write_scenario(out_dir: Path, name: str, events: Iterator[dict[str, Any]], plan: list[Incident]) -> int:
    from schemas.codec import dumps

    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(out_dir / f"{name}.jsonl", "wb") as fh:
        for event in events:
            fh.write(dumps(event) + b"\n")
            n += 1
    labels = [asdict(i) for i in plan]
    (out_dir / f"{name}.labels.json").write_bytes(dumps({"incidents": labels, "events": n}))
    return n
