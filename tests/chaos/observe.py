"""What the system says it counted, gathered per view and compared with the expected totals.

Views: the worker(s) (status endpoint, tenant rows of today), ``usage_events`` (one row per
event id), ``spend_minute`` (tenant dimension) and ``spend_user_day``.

Several chdb directories (one per worker in the rebalance scenario) are read as one
ClickHouse server would hold them: ``usage_events`` rows are de-duplicated by ``event_id``
across directories (a ReplacingMergeTree does so on one server); the rollups hold absolute
totals with a version per key, so for each key the row with the highest version across all
directories is the total (the latest writer wins, as ``ReplacingMergeTree(version)`` would
decide on one server). Versions are the writers' wall-clock nanoseconds on one machine."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.chaos.harness import read_chdb
from tests.chaos.workload import NANO, Expected, diff
from tokenbrake.schemas.codec import loads
from tokenbrake.streams.state.records import SpendTotals
from tokenbrake.streams.state.store import POS


def nanos(text: str) -> int:
    return int(Decimal(text) / NANO)


def clickhouse(dirs: list[Path], exclude_tenants: set[str] = frozenset()) -> dict[str, Any]:
    usage: dict[str, int] = {}
    usage_tenant: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    in_dirs: dict[str, int] = defaultdict(int)
    minutes: dict[tuple, tuple[int, list[int]]] = {}
    user_days: dict[tuple, tuple[int, list[int]]] = {}
    controls: dict[str, tuple] = {}
    excluded: dict[str, int] = {}  # usage rows of the excluded tenants, by event id
    by_dir: dict[str, set[str]] = {}  # event ids stored in each directory
    unmerged = 0
    for path in dirs:
        got = read_chdb(path)
        by_dir[path.parent.name] = {row[0] for row in got["usage"]}
        unmerged += got["usage_rows_unmerged"]
        for event_id, cost, tenant, _user in got["usage"]:
            if tenant in exclude_tenants:
                excluded[event_id] = nanos(cost)
                continue
            in_dirs[event_id] += 1
            if event_id not in usage:
                usage[event_id] = nanos(cost)
                usage_tenant[tenant][0] += 1
                usage_tenant[tenant][1] += nanos(cost)
        for tenant, dimension, value, minute, requests, cost, version in got["minutes"]:
            if dimension != "tenant" or tenant in exclude_tenants:
                continue
            key = (tenant, int(minute))
            if key not in minutes or int(version) > minutes[key][0]:
                minutes[key] = (int(version), [int(requests), nanos(cost)])
        for tenant, user, day, requests, cost, version in got["user_days"]:
            if tenant in exclude_tenants:
                continue
            key = (tenant, user, day)
            if key not in user_days or int(version) > user_days[key][0]:
                user_days[key] = (int(version), [int(requests), nanos(cost)])
        for control_id, scope, action, downgrade_to, issued_by in got["controls"]:
            controls[control_id] = (scope, action, downgrade_to, issued_by)
    return {"usage": usage, "usage_tenant": dict(usage_tenant), "excluded_usage": excluded,
            "in_several_dirs": sum(1 for n in in_dirs.values() if n > 1), "usage_rows_unmerged": unmerged,
            "minutes": {k: v for k, (_, v) in minutes.items()}, "user_days": {k: v for k, (_, v) in user_days.items()},
            "controls": controls, "by_dir": by_dir}


def worker_tenants(statuses: list[dict[str, Any]], day: str) -> dict[str, list[int]] | None:
    """Sum of the workers' tenant rows for today; None when a worker's today is not ``day``."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for status in statuses:
        if datetime.fromtimestamp(status["now_ms"] / 1000, tz=UTC).date().isoformat() != day:
            return None
        for row in status["spend"]:
            scope = row["scope"]
            if scope.startswith("t=") and "|" not in scope:
                out[scope[2:]][0] += row["today_requests"]
                out[scope[2:]][1] += nanos(row["today_usd"])
    return dict(out)


def compare(expected: Expected, worker: dict[str, list[int]] | None, ch: dict[str, Any] | None) -> dict[str, Any]:
    """Per view: requests seen, lost and double-counted (requests and nano-dollars)."""
    views: dict[str, Any] = {}
    if worker is not None:
        views["worker"] = diff(expected.tenants, worker)
    if ch is not None:
        ids = set(ch["usage"])
        stored = ids & expected.event_cost.keys()
        views["usage_events"] = {**diff(expected.tenants, ch["usage_tenant"]), "missing_ids": len(
            expected.event_cost.keys() - ids), "unexpected_ids": len(ids - expected.event_cost.keys()),
            "wrong_cost": sum(1 for i in stored if ch["usage"][i] != expected.event_cost[i]),
            "in_several_dirs": ch["in_several_dirs"]}
        views["spend_minute"] = diff(expected.minutes, ch["minutes"])
        views["spend_user_day"] = diff(expected.user_days, ch["user_days"])
    return views


def headline(views: dict[str, Any]) -> dict[str, int]:
    """The worst view: most lost, most double-counted."""
    return {"lost": max((v["lost"] for v in views.values()), default=0),
            "double": max((v["double"] for v in views.values()), default=0)}


def holes(messages: list[tuple[bytes | None, bytes | None, int]], results: list, by_dir: dict[str, set[str]],
          expected_ids: set[str]) -> list[dict[str, Any]]:
    """Runs of consecutive messages (per partition, by offset) whose expected events are in no
    chdb directory, with the directories holding the messages just before and after: where a
    window lost messages, and which worker owned the partition around it."""
    per: dict[int, list[tuple[int, str, int]]] = defaultdict(list)
    for (_, value, _), result in zip(messages, results, strict=True):
        if isinstance(result, str) or not value:
            continue
        try:
            obj = loads(value)
        except ValueError:
            continue
        ids = [e.get("event_id") for e in (obj if isinstance(obj, list) else [obj]) if isinstance(e, dict)]
        ids = [i for i in ids if i in expected_ids]
        if not ids:
            continue
        holders = "+".join(name for name, stored in by_dir.items() if any(i in stored for i in ids)) or "-"
        missing = sum(1 for i in ids if not any(i in stored for stored in by_dir.values()))
        per[result[0]].append((result[1], holders, missing))
    out = []
    for partition, seq in sorted(per.items()):
        seq.sort()
        i = 0
        while i < len(seq):
            if seq[i][1] != "-":
                i += 1
                continue
            j = i
            while j + 1 < len(seq) and seq[j + 1][1] == "-":
                j += 1
            out.append({"partition": partition, "offsets": [seq[i][0], seq[j][0]], "messages": j - i + 1,
                        "events": sum(m for _, _, m in seq[i:j + 1]),
                        "before": seq[i - 1][1] if i else None, "after": seq[j + 1][1] if j + 1 < len(seq) else None})
            i = j + 1
    return out


def changelog_regressions(records: list[Any], limit: int = 12) -> dict[str, Any]:
    """Keys of the aggregates changelog whose request count or position goes down from one
    record to the next (in the topic's order): a value written from stale state after a newer
    one (a zombie write), which a later restore would take as the key's value."""
    last: dict[bytes, tuple[int, int, int, int]] = {}  # key -> (requests, position, partition, offset)
    found, examples = 0, []
    for rec in records:
        if rec.value is None or rec.key is None:
            continue
        try:
            value = loads(rec.value)
        except ValueError:
            continue
        totals = SpendTotals.read(value)  # a record of another shape fails the scenario loudly
        now = (totals[1], totals[POS], rec.partition, rec.offset)
        before = last.get(rec.key)
        last[rec.key] = now
        if before is not None and (now[0] < before[0] or now[1] < before[1]):
            found += 1
            if len(examples) < limit:
                examples.append({"key": rec.key.decode(errors="replace"), "partition": rec.partition,
                                 "before": {"requests": before[0], "pos": before[1], "offset": before[3]},
                                 "after": {"requests": now[0], "pos": now[1], "offset": now[3],
                                           "ts": rec.timestamp}})
    return {"keys": len(last), "regressions": found, "examples": examples}
