"""``tokenbrake evaluate``: precision, recall, detection delay and false alerts per day,
per rule, by running the live engine (backtest) over labelled scenario files."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from schemas.codec import loads
from streams.aggregate.periods import DAY_MS
from streams.backtest import load_events, run
from streams.decide.policies import parse_policies
from streams.engine import Engine
from streams.price import PriceBook
from streams.replay import read_azure, synthesize
from streams.scenarios import SCENARIO_POLICIES

RULES = ("retry_storm", "cost_rate", "spend_spike", "token_inflation", "request_cost_cap", "heavy_user")
GRACE_MS = 2 * 3_600_000  # an alert up to 2h after an incident's end still belongs to it


def alerts_for(events: list[Any], policies: str = SCENARIO_POLICIES) -> list[dict[str, Any]]:
    engine = Engine(parse_policies(policies), PriceBook())
    return [d for d in run(engine, events) if d["kind"] == "alert" and d["state"] == "firing"
            and d["rule"] in RULES]


def _ts(alert: dict[str, Any]) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(alert["ts"].replace("Z", "+00:00")).timestamp() * 1000)


def _matches(alert: dict[str, Any], inc: dict[str, Any], rules: set[str]) -> bool:
    scope = alert["scope"]
    return (alert["rule"] in rules and scope["tenant_id"] == inc["tenant"]
            and (inc["feature"] is None or scope.get("feature_id") in (None, inc["feature"]))
            and inc["start"] <= _ts(alert) <= inc["end"] + GRACE_MS)


def evaluate(directory: Path, progress: Any = None) -> dict[str, Any]:
    labelled = sorted(p for p in directory.glob("*.jsonl") if (p.with_suffix("").with_suffix(".labels.json")).exists()
                      or Path(str(p)[:-6] + ".labels.json").exists())
    tp: dict[str, int] = defaultdict(int)
    fired: dict[str, int] = defaultdict(int)
    found: dict[str, int] = defaultdict(int)
    expected: dict[str, int] = defaultdict(int)
    delays: dict[str, list[float]] = defaultdict(list)
    clean_alerts: dict[str, int] = defaultdict(int)
    clean_days = 0.0
    files = []
    for path in labelled:
        labels = loads(Path(str(path)[:-6] + ".labels.json").read_bytes())
        events, _ = load_events(path)
        alerts = alerts_for(events)
        span_days = (events[-1].ts - events[0].ts).total_seconds() * 1000 / DAY_MS if events else 0
        incidents = labels["incidents"]
        files.append({"file": path.name, "events": len(events), "alerts": len(alerts), "incidents": len(incidents)})
        if not incidents:
            clean_days += span_days
            for a in alerts:
                clean_alerts[a["rule"]] += 1
        for a in alerts:
            if not incidents:
                fired[a["rule"]] += 1
                continue
            fired[a["rule"]] += 1
            if any(_matches(a, inc, {inc["rule"], *inc["also"]}) for inc in incidents):
                tp[a["rule"]] += 1
        for inc in incidents:
            expected[inc["rule"]] += 1
            hits = [_ts(a) for a in alerts if _matches(a, inc, {inc["rule"]})]
            if hits:
                found[inc["rule"]] += 1
                delays[inc["rule"]].append((min(hits) - inc["start"]) / 60_000)
        if progress:
            progress(path.name)
    per_rule = {}
    for rule in RULES:
        d = delays.get(rule, [])
        per_rule[rule] = {
            "precision": round(tp[rule] / fired[rule], 3) if fired[rule] else None,
            "recall": round(found[rule] / expected[rule], 3) if expected[rule] else None,
            "incidents": expected[rule], "detected": found[rule], "alerts": fired[rule],
            "median_delay_min": round(statistics.median(d), 1) if d else None,
            "worst_delay_min": round(max(d), 1) if d else None,
            "false_alerts_per_clean_day": round(clean_alerts[rule] / clean_days, 3) if clean_days else None,
        }
    return {"rules": per_rule, "files": files, "clean_days": round(clean_days, 2)}


def azure_clean_alerts(trace: Path) -> list[dict[str, Any]]:
    """The real Azure trace, replayed at its own pace as tenants: organic traffic, no incident."""
    from schemas.usage import UsageEvent

    start = 1_700_000_000_000 // 60_000 * 60_000
    events = [UsageEvent.model_validate({k: v for k, v in e.items() if not k.startswith("_")})
              for e in synthesize(read_azure(trace), start, 1.0, seed=11)]
    return alerts_for(events)
