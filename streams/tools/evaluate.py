"""``tokenbrake evaluate``: precision, recall, detection delay and false alerts per clean
day, per rule and per traffic volume, by running the live engine (backtest) over labelled
scenarios: files written by ``tokenbrake scenarios``, or generated on the fly.

Everything streams: a scenario's events go from the file (or the generator) through the
engine one at a time; only the firing alerts are kept.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from tokenbrake.detectors.registry import REGISTRY
from tokenbrake.schemas.codec import loads
from tokenbrake.schemas.usage import UsageEvent
from tokenbrake.streams.aggregate.periods import DAY_MS
from tokenbrake.streams.backtest import in_time_order, read_events, run
from tokenbrake.streams.decide.policies import parse_policies
from tokenbrake.streams.engine import Engine
from tokenbrake.streams.price import PriceBook
from tokenbrake.streams.tools.replay import read_azure, synthesize
from tokenbrake.streams.tools.scenarios import SCENARIO_POLICIES, VOLUMES, generate

RULES = tuple(spec.rule for spec in REGISTRY)
GRACE_MS = 2 * 3_600_000  # an alert up to 2h after an incident's end still belongs to it


class Span:
    """Counts the events that pass and the event time they cover."""

    def __init__(self, events: Iterable[UsageEvent]) -> None:
        self.events, self.n, self.first, self.last = events, 0, None, None

    def __iter__(self):  # noqa: ANN204
        for ev in self.events:
            self.n += 1
            ts = int(ev.ts.timestamp() * 1000)
            self.first = ts if self.first is None else self.first
            self.last = ts
            yield ev

    @property
    def days(self) -> float:
        return (self.last - self.first) / DAY_MS if self.first is not None else 0.0


def alerts_for(events: Iterable[UsageEvent], policies: str = SCENARIO_POLICIES) -> list[dict[str, Any]]:
    engine = Engine(parse_policies(policies), PriceBook())
    return [d for d in run(engine, in_time_order(events)) if d["kind"] == "alert" and d["state"] == "firing"
            and d["rule"] in RULES]


def _ts(alert: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(alert["ts"].replace("Z", "+00:00")).timestamp() * 1000)


def _matches(alert: dict[str, Any], inc: dict[str, Any], rules: set[str]) -> bool:
    scope = alert["scope"]
    return (alert["rule"] in rules and scope["tenant_id"] == inc["tenant"]
            and (inc["feature"] is None or scope.get("feature_id") in (None, inc["feature"]))
            and inc["start"] <= _ts(alert) <= inc["end"] + GRACE_MS)


class Tally:
    """Alerts of several scenarios against their labels, per rule."""

    def __init__(self) -> None:
        self.tp: dict[str, int] = defaultdict(int)
        self.fired: dict[str, int] = defaultdict(int)
        self.found: dict[str, int] = defaultdict(int)
        self.expected: dict[str, int] = defaultdict(int)
        self.delays: dict[str, list[float]] = defaultdict(list)
        self.clean_alerts: dict[str, int] = defaultdict(int)
        self.clean_days = 0.0
        self.files: list[dict[str, Any]] = []
        self.missed: list[str] = []

    def add(self, name: str, events: Iterable[UsageEvent], incidents: list[dict[str, Any]]) -> None:
        span = Span(events)
        alerts = alerts_for(span)
        self.files.append({"file": name, "events": span.n, "alerts": len(alerts), "incidents": len(incidents)})
        if not incidents:
            self.clean_days += span.days
            for found in alerts:
                self.clean_alerts[found["rule"]] += 1
        for found in alerts:
            self.fired[found["rule"]] += 1
            if incidents and any(_matches(found, inc, {inc["rule"], *inc["also"]}) for inc in incidents):
                self.tp[found["rule"]] += 1
        for inc in incidents:
            self.expected[inc["rule"]] += 1
            hits = [_ts(a) for a in alerts if _matches(a, inc, {inc["rule"]})]
            if hits:
                self.found[inc["rule"]] += 1
                due = inc.get("detect_from") or inc["start"]
                self.delays[inc["rule"]].append(max(0, min(hits) - due) / 60_000)
            else:
                self.missed.append(f"{name}: {inc['kind']} on {inc['tenant']}/{inc['feature']}")

    def report(self) -> dict[str, Any]:
        per_rule = {}
        for rule in RULES:
            delays, fired, expected = self.delays.get(rule, []), self.fired[rule], self.expected[rule]
            per_rule[rule] = {
                "precision": round(self.tp[rule] / fired, 3) if fired and expected else None,
                "recall": round(self.found[rule] / expected, 3) if expected else None,
                "incidents": expected, "detected": self.found[rule], "alerts": fired,
                "median_delay_min": round(statistics.median(delays), 1) if delays else None,
                "worst_delay_min": round(max(delays), 1) if delays else None,
                "false_alerts_per_clean_day": round(self.clean_alerts[rule] / self.clean_days, 3)
                if self.clean_days else None,
            }
        return {"rules": per_rule, "files": self.files, "clean_days": round(self.clean_days, 2),
                "missed": self.missed}


def _volume_of(name: str) -> str:
    head = name.split("-", 1)[0]
    return head if head in VOLUMES else "files"


def evaluate(directory: Path, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every ``<name>.jsonl`` with a ``<name>.labels.json`` beside it, grouped by volume
    (the name's prefix, as ``tokenbrake scenarios`` writes them)."""
    tallies: dict[str, Tally] = defaultdict(Tally)
    for path in sorted(directory.glob("*.jsonl")):
        labels_path = Path(str(path)[:-6] + ".labels.json")
        if not labels_path.exists():
            continue
        labels = loads(labels_path.read_bytes())
        tallies[_volume_of(path.stem)].add(path.name, read_events(path), labels["incidents"])
        if progress:
            progress(path.name)
    return {"volumes": {v: t.report() for v, t in tallies.items()}}


def evaluate_generated(volumes: Iterable[str], seeds: Iterable[int], tokens: list[tuple[int, int]],
                       days: int | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The same, on scenarios generated on the fly (nothing written to disk)."""
    from dataclasses import asdict

    report = {}
    for volume in volumes:
        tally = Tally()
        for seed in seeds:
            for kind, incidents in (("incidents", True), ("clean", False)):
                stream, plan = generate(seed, days, tokens, incidents=incidents, volume=volume)
                events = (UsageEvent.model_validate(e) for e in stream)
                tally.add(f"{volume}-{kind}-seed{seed}", events, [asdict(i) for i in plan])
                if progress:
                    progress(f"{volume}-{kind}-seed{seed}")
        report[volume] = tally.report()
    return {"volumes": report}


def azure_clean_alerts(trace: Path) -> list[dict[str, Any]]:
    """The real Azure trace, replayed at its own pace as tenants: organic traffic, no incident."""
    start = 1_700_000_000_000 // 60_000 * 60_000
    events = (UsageEvent.model_validate({k: v for k, v in e.items() if not k.startswith("_")})
              for e in synthesize(read_azure(trace), start, 1.0, seed=11))
    return alerts_for(events)
