"""Seeded, labelled scenarios for evaluating the detectors, at two volumes.

Clean traffic: four tenants with daily seasonality (night lows at a quarter of the 14:00
peak) and weekly seasonality (weekends at half), token sizes drawn from the Azure
conversation trace, Zipf-shaped users, organic failures retried once, and a prompt cache
on ``chat`` (60% of its calls read half their input from the cache: ~30% of its input
tokens). Two volumes:

- ``standard``: ~20 calls a minute at the weekday peak over all tenants, 1% failures;
- ``production``: ~280 calls a minute at the peak, the busiest scope (acme x chat) ~150,
  1.5% failures; about 1.4 million events in 8 days.

Incidents are injected after the first days, each with a ground-truth label (primary
``rule``, ``also`` = other rules that may rightly fire, ``tenant``, ``feature``, ``start``,
``end``, and ``detect_from`` where detection is only due later): a retry storm (the
provider failing 80% of attempts, clients retrying up to 3 times), a runaway loop (5x the
scope's calls at its normal call sizes), gradual context growth (+8% input tokens per
call a day for four days, then holding), a cache collapse (hits fall from 60% to 3% of
calls), a silent model switch (gpt-4o-mini to the ~16x dearer gpt-4o), a single costly
call, a tenant's batch export tripling its spend for a day, and one abusive heavy user.
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
#: feature -> (provider, model, share of a tenant's calls, share of calls reading the prompt cache)
FEATURES = {"chat": ("openai", "gpt-4o", 0.55, 0.6), "summarize": ("openai", "gpt-4o-mini", 0.3, 0.0),
            "search": ("anthropic", "claude-3-5-haiku", 0.15, 0.0)}
SCENARIO_POLICIES = """\
# Detector evaluation: no budgets, the default detectors, a $0.25 per-call cap.
request_cost_caps:
  - {id: quarter-dollar-call, scope: {tenant: "*"}, max_usd: "0.25"}
"""
GROWTH_PER_DAY = 1.08  # gradual context growth
GROWTH_DAYS = 4


@dataclass(frozen=True)
class Volume:
    """A traffic profile: calls a minute at the weekday peak per tenant, failure rate, the
    scenario's length, and which scope each incident lands on."""

    name: str
    tenants: dict[str, float]
    failure_rate: float
    days: int
    scopes: dict[str, tuple[str, str | None]]


VOLUMES = {
    "standard": Volume("standard", {"acme": 8.0, "globex": 6.0, "initech": 4.0, "umbrella": 2.0}, 0.01, 9, {
        "retry_storm": ("globex", "chat"), "runaway_loop": ("acme", "chat"), "model_switch": ("acme", "summarize"),
        "context_growth": ("globex", "chat"), "cache_collapse": ("acme", "chat"), "huge_call": ("umbrella", "chat"),
        "batch_export": ("initech", None), "heavy_user": ("umbrella", None)}),
    "production": Volume("production", {"acme": 270.0, "globex": 50.0, "initech": 15.0, "umbrella": 5.0}, 0.015, 8, {
        "retry_storm": ("acme", "chat"), "runaway_loop": ("acme", "summarize"),
        "model_switch": ("globex", "summarize"), "context_growth": ("globex", "chat"),
        "cache_collapse": ("acme", "chat"), "huge_call": ("umbrella", "chat"), "batch_export": ("initech", None),
        "heavy_user": ("umbrella", None)}),
}


@dataclass
class Incident:
    kind: str
    rule: str
    tenant: str
    feature: str | None
    start: int
    end: int
    also: list[str] = field(default_factory=list)
    detect_from: int | None = None  # delay is measured from here (a drift is due once it crosses the bar)


def azure_tokens(path: Path) -> list[tuple[int, int]]:
    with open(path, newline="") as fh:
        return [(int(r["ContextTokens"]), int(r["GeneratedTokens"])) for r in csv.DictReader(fh)]


def _diurnal(ts: int) -> float:
    hour = (ts % DAY_MS) / HOUR_MS
    weekday = ((ts - EPOCH) // DAY_MS) % 7
    day = 0.25 + 0.75 * math.exp(-(((hour - 14) / 5) ** 2))  # peak at 14:00 UTC
    return day * (0.5 if weekday >= 5 else 1.0)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    k, p, threshold = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


def plan_incidents(rng: random.Random, volume: Volume) -> list[Incident]:
    """One of each incident, at seeded times after the warm-up (incidents on weekdays)."""
    def at(day: int, lo_h: float, hi_h: float) -> int:
        return EPOCH + day * DAY_MS + int(rng.uniform(lo_h, hi_h) * HOUR_MS) // MIN_MS * MIN_MS

    last, s = volume.days - 1, volume.scopes
    weekdays = [d for d in range(2, last) if d % 7 < 5]  # EPOCH is a Monday
    storm, loop = at(weekdays[-1], 9, 17), at(weekdays[-1], 11, 16)
    switch, collapse, huge = at(weekdays[0], 8, 12), at(weekdays[1], 9, 13), at(weekdays[1], 2, 22)
    growth = at(volume.days - 5, 0, 12)  # crosses +25% ~2.9 days later, due within a day of that
    crossed = growth + int(math.log(1.25) / math.log(GROWTH_PER_DAY) * DAY_MS)
    heavy = at(last - 1, 6, 10)  # on a tenant no other incident of that day touches

    def inc(kind: str, rule: str, start: int, end: int, also: list[str], **kw: Any) -> Incident:
        return Incident(kind, rule, s[kind][0], s[kind][1], start, end, also, **kw)

    return [
        inc("retry_storm", "retry_storm", storm, storm + 20 * MIN_MS, ["cost_rate", "spend_spike"]),
        inc("runaway_loop", "cost_rate", loop, loop + 20 * MIN_MS, ["spend_spike", "heavy_user"]),
        inc("model_switch", "cost_rate", switch, switch + 6 * HOUR_MS, ["spend_spike"]),
        inc("context_growth", "token_inflation", growth, EPOCH + volume.days * DAY_MS, ["spend_spike", "cost_rate"],
            detect_from=crossed),
        inc("cache_collapse", "cache_regression", collapse, collapse + 6 * HOUR_MS, ["spend_spike"]),
        inc("huge_call", "request_cost_cap", huge, huge + MIN_MS, ["cost_rate"]),
        inc("batch_export", "spend_spike", EPOCH + last * DAY_MS, EPOCH + volume.days * DAY_MS,
            ["cost_rate", "heavy_user"]),
        # the abuser's calls never read the prompt cache: the feature's cached share does fall
        inc("heavy_user", "heavy_user", heavy, heavy + 6 * HOUR_MS,
            ["spend_spike", "cost_rate", "token_inflation", "cache_regression"]),
    ]


def generate(seed: int, days: int | None, tokens: list[tuple[int, int]], incidents: bool = True,
             scale: float = 1.0, volume: str = "standard") -> tuple[Iterator[dict[str, Any]], list[Incident]]:
    """A lazy stream of events in time order (one minute is held at a time) and its labels."""
    profile = VOLUMES[volume]
    if days is not None and days != profile.days:
        profile = Volume(profile.name, profile.tenants, profile.failure_rate, days, profile.scopes)
    rng = random.Random(seed)
    plan = plan_incidents(rng, profile) if incidents else []
    return _events(rng, profile, tokens, {inc.kind: inc for inc in plan}, scale), plan


def _growth(inc: Incident | None, ts: int) -> float:
    if inc is None or ts < inc.start:
        return 1.0
    return GROWTH_PER_DAY ** min((ts - inc.start) / DAY_MS, GROWTH_DAYS)


def _events(rng: random.Random, volume: Volume, tokens: list[tuple[int, int]], inc: dict[str, Incident],
            scale: float) -> Iterator[dict[str, Any]]:
    users = {t: [f"{t[:2]}-u{i:03d}" for i in range(300)] for t in volume.tenants}
    user_weights = list(_cumulative([1 / (i + 1) ** 0.8 for i in range(300)]))
    names = list(FEATURES)
    feature_weights = list(_cumulative([f[2] for f in FEATURES.values()]))
    seq = 0

    def active(kind: str, ts: int, tenant: str, feature: str | None = None) -> Incident | None:
        i = inc.get(kind)
        if i is None or not (i.start <= ts < i.end) or i.tenant != tenant:
            return None
        return i if i.feature is None or i.feature == feature else None

    def call(ts: int, tenant: str, feature: str, provider: str, model: str, user: str, inp: int, out: int,
             attempt: int = 0, status: str = "ok", logical: str | None = None, cached: int = 0,
             version: str = "v1") -> dict:
        nonlocal seq
        seq += 1
        return {"event_id": f"s{seq}", "ts": ts, "tenant_id": tenant, "feature_id": feature, "user_id": user,
                "provider": provider, "model": model, "input_tokens": inp, "output_tokens": out,
                "cached_input_tokens": cached, "logical_call_id": logical or f"s{seq}", "attempt": attempt,
                "status": status, "prompt_version": version, "latency_ms": 300 + out * 15}

    def organic(ts: int, tenant: str, feature: str, user: str, batch: list[dict], minute: int) -> None:
        provider, model, _, cache_share = FEATURES[feature]
        inp, out = tokens[rng.randrange(len(tokens))]
        if active("model_switch", ts, tenant, feature):
            model = "gpt-4o"  # a release quietly moved this feature to a ~16x pricier model
        if g := active("context_growth", ts, tenant, feature):
            inp = round(inp * _growth(g, ts))
        if cache_share and active("cache_collapse", ts, tenant, feature):
            cache_share = 0.03  # a prompt edit broke the cached prefix
        cached = inp // 2 if cache_share and rng.random() < cache_share else 0
        logical = f"c{minute}-{rng.getrandbits(40):x}"
        if active("retry_storm", ts, tenant, feature):
            for attempt in range(4):  # the provider is failing and the client retries hard
                failed = attempt < 3 and rng.random() < 0.8
                batch.append(call(ts + attempt * 1500, tenant, feature, provider, model, user, inp,
                                  0 if failed else out, attempt, "error" if failed else "ok", logical, cached))
                if not failed:
                    return
            return
        if rng.random() < volume.failure_rate:
            batch.append(call(ts, tenant, feature, provider, model, user, inp, 0, 0, "error", logical, cached))
            batch.append(call(ts + 800, tenant, feature, provider, model, user, inp, out, 1, "ok", logical, cached))
            return
        batch.append(call(ts, tenant, feature, provider, model, user, inp, out, 0, "ok", logical, cached))

    for minute in range(volume.days * 1440):
        t0 = EPOCH + minute * MIN_MS
        season = _diurnal(t0)
        batch: list[dict] = []
        for tenant, peak in volume.tenants.items():
            rate = peak * season * scale
            if active("batch_export", t0, tenant):
                rate *= 3
            for _ in range(_poisson(rng, rate)):
                ts = t0 + rng.randrange(MIN_MS)
                feature = rng.choices(names, cum_weights=feature_weights)[0]
                user = rng.choices(users[tenant], cum_weights=user_weights)[0]
                loops = 5 if active("runaway_loop", ts, tenant, feature) else 1  # an agent stuck in a loop
                for k in range(loops):
                    organic(min(ts + k * 7_000, t0 + MIN_MS - 1), tenant, feature, user, batch, minute)
        if (e := inc.get("heavy_user")) is not None and e.start <= t0 < e.end:
            for _ in range(_poisson(rng, 6)):
                inp, out = tokens[rng.randrange(len(tokens))]
                batch.append(call(t0 + rng.randrange(MIN_MS), e.tenant, "chat", "openai", "gpt-4o", "abuser-1",
                                  inp * 3, out * 2))
        if (e := inc.get("huge_call")) is not None and e.start == t0:
            batch.append(call(t0 + 1234, e.tenant, e.feature or "chat", "openai", "gpt-4o", "u-big", 200_000, 2_000))
        batch.sort(key=lambda ev: ev["ts"])
        yield from batch


def _cumulative(weights: list[float]) -> Iterator[float]:
    total = 0.0
    for w in weights:
        total += w
        yield total


def write_scenario(out_dir: Path, name: str, events: Iterator[dict[str, Any]], plan: list[Incident]) -> int:
    from tokenbrake.schemas.codec import dumps

    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(out_dir / f"{name}.jsonl", "wb") as fh:
        for event in events:
            fh.write(dumps(event) + b"\n")
            n += 1
    labels = [asdict(i) for i in plan]
    (out_dir / f"{name}.labels.json").write_bytes(dumps({"incidents": labels, "events": n}))
    return n
