"""The input scenarios: hostile messages (with the poison-pill stall detector) and privacy.
Same conventions as :mod:`tests.chaos.scenarios`."""

from __future__ import annotations

import time
from typing import Any

from tests.chaos.harness import Producer, Worker, consume_all, lag, produce
from tests.chaos.hostile import UNPRICED_TENANT, cases
from tests.chaos.scenarios import Figures, Lab, _app, judge, settle
from tests.chaos.workload import Workload, make_workload
from tokenbrake.schemas.codec import loads


# -- 5. hostile messages ---------------------------------------------------------------------------
def _tenant_key(value: bytes | None) -> bytes:
    """Keyed by tenant when the message names one, as a producer should key (an event that
    lands on another partition is forwarded, and dead-lettered from there under another source)."""
    try:
        obj = loads(value) if value else None
    except Exception:  # noqa: BLE001 - hostile bytes: any parse error means no tenant
        return b"hostile"
    tenant = obj.get("tenant_id") if isinstance(obj, dict) else None
    return tenant.encode() if isinstance(tenant, str) and tenant else b"hostile"


def hostile(lab: Lab, seed: int, n: int = 5000, every: int = 3) -> Figures:
    """Every hostile kind of ``tests.chaos.hostile`` interleaved with ``n`` valid events (one
    hostile message after every ``every`` valid ones, the valid tail after the last): each
    must be dead-lettered with a reason, the worker stay up, every valid event counted once."""
    started = time.monotonic()
    fig = Figures(scenario="hostile", seed=seed, events=n, partitions=2)
    base = make_workload(n, seed, prefix="h")
    clones = iter(range(10**9))

    def valid() -> dict[str, Any]:
        i = next(clones)
        return {**base.events[i % len(base.events)], "event_id": f"hv{seed}-{i}"}

    corpus = cases(valid)
    fig["kinds"] = len(corpus)
    inside = [e for c in corpus for e in c.valid_inside]
    wl = Workload(seed, base.events + inside, [], base.tenants)
    messages: list[tuple[bytes | None, bytes | None, int]] = []
    where: list[int] = []  # index in messages of each case
    valid_msgs = list(base.messages)
    for case in corpus:
        for _ in range(every):
            if valid_msgs:
                messages.append(valid_msgs.pop(0))
        where.append(len(messages))
        messages.append((_tenant_key(case.value), case.value, len(case.valid_inside)))
    messages.extend(valid_msgs)  # the tail: the worker must still be deciding after the corpus
    app_id = _app("hostile")
    w = lab.worker(f"hostile-{seed}-{app_id[-6:]}", app_id, "", partitions=2)
    w.start()
    producer = Producer(lab.broker.bootstrap, w.topic, messages).start().join()
    t0 = time.monotonic()
    stalls = []  # the worker stopped deciding (lag stuck): restarted by hand, as an operator would
    while (stuck := stalled(lab, w, app_id)) is not None and len(stalls) < 8:
        stalls.append({"lag": stuck, "process_up": w.running(), "error": last_error(w)})
        w.stop()
        w.start()
    settle_s = settle(lab, [w], app_id, w.topic, timeout_s=60)
    fig["settle_s"] = round(time.monotonic() - t0, 1) if settle_s is not None else None
    fig["restarts_by_hand"] = stalls
    fig.check("the worker never stopped deciding (no restart by hand needed)", not stalls,
              [(s["error"], s["process_up"]) for s in stalls])
    fig.check("settled (every message acknowledged)", settle_s is not None,
              lag(lab.broker.bootstrap, app_id, w.topic))
    fig.check("worker process up", w.running())
    dlq: dict[str, list[str]] = {}
    for record in consume_all(lab.broker.bootstrap, f"{app_id}.dlq"):
        headers = {k: v.decode(errors="replace") for k, v in record.headers}
        dlq.setdefault(headers.get("tokenbrake-source", "?"), []).append(headers.get("tokenbrake-reason", ""))
    outcomes, missing, refused = {}, [], []
    for case, index in zip(corpus, where, strict=True):
        result = producer.results[index]
        if isinstance(result, str):
            refused.append(case.kind)
            outcomes[case.kind] = f"refused by the broker: {result[:200]}"
            continue
        reasons = dlq.get(f"{w.topic}/{result[0]}/{result[1]}", [])
        outcomes[case.kind] = reasons[:3] + ([f"... {len(reasons)} in all"] if len(reasons) > 3 else [])
        if case.counted_only:
            continue
        if len(reasons) < case.dead_letters or not all(reasons):
            missing.append(case.kind)
    fig.update({"dead_letter_reasons": outcomes, "not_dead_lettered": missing, "refused_by_broker": refused})
    fig.check(f"every hostile kind dead-lettered with a reason ({len(corpus) - len(missing)} of {len(corpus)})",
              not missing, missing)
    try:
        statuses = [w.status()]
    except OSError:
        statuses = None
    fig.check("status endpoint answers", statuses is not None)
    if statuses is not None:
        statuses[0]["spend"] = [r for r in statuses[0]["spend"] if r["scope"] != f"t={UNPRICED_TENANT}"]
    w.stop()
    ch = judge(fig, wl, statuses, [w.home / "chdb"], len(wl.events), exclude_tenants={UNPRICED_TENANT})
    unpriced = [i for c in corpus if c.counted_only for i in [loads(c.value)["event_id"]]]
    fig["unknown_model_stored"] = sum(1 for i in unpriced if i in ch["excluded_usage"])
    fig.check("the unknown-model event stored (priced by the fallback)", fig["unknown_model_stored"] == len(unpriced),
              fig["unknown_model_stored"])
    fig["sent"] = sum(m[2] for m in messages)
    return fig.finish(started)


def stalled(lab: Lab, w: Worker, app_id: str, quiet_s: float = 15.0, timeout_s: float = 180.0) -> int | None:
    """None once the group's lag is 0; the lag when it has not fallen for ``quiet_s``."""
    best, since, deadline = None, time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        behind = sum(lag(lab.broker.bootstrap, app_id, w.topic).values())
        if behind == 0:
            return None
        if best is None or behind < best:
            best, since = behind, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            return behind
        time.sleep(1.0)
    return best


def last_error(w: Worker) -> str:
    """Why the agent stopped, from the worker's log since its last start: every distinct
    ``Crashed reason=`` line (Faust restarts a crashed agent), else the last error line."""
    text = w.log_path.read_text(errors="replace").rsplit("=== chaos harness: start", 1)[-1]
    crashes = list(dict.fromkeys(ln.split("Crashed reason=", 1)[1][:200] for ln in text.splitlines()
                                 if "Crashed reason=" in ln))
    if crashes:
        return " | ".join(crashes)
    lines = [ln for ln in text.splitlines() if "Error" in ln or "Exception" in ln or "error" in ln[:40]]
    return lines[-1][:300] if lines else ""


# -- 6. privacy ------------------------------------------------------------------------------------
def privacy(lab: Lab, seed: int, n: int = 2000) -> Figures:
    """Events reported through ``UsageReporter`` with raw user ids (e-mail addresses); then no
    raw id (every one ends in ``@example.com``, including the other scenarios' users) in any
    worker log, the broker's log, any topic on the broker or any table of any chdb directory."""
    import asyncio

    from tests.chaos.harness import list_topics, read_chdb
    from tests.chaos.workload import RAW_ID_MARK, SALT, raw_user
    from tokenbrake.clients.reporter import UsageReporter

    started = time.monotonic()
    fig = Figures(scenario="privacy", seed=seed, events=n)
    app_id = _app("privacy")
    w = lab.worker(f"privacy-{seed}-{app_id[-6:]}", app_id, "", partitions=2, log_level="debug")
    w.start()

    async def report() -> int:
        reporter = UsageReporter(lab.broker.bootstrap, w.topic, user_id_salt=SALT)
        await reporter.start()
        for i in range(n):
            reporter.record(tenant_id="privacy-t", feature_id="chat", user_id=raw_user(seed, i % 300),
                            provider="openai", model="gpt-4o", input_tokens=100 + i % 50, output_tokens=20)
        await reporter.stop()
        return reporter.sent

    fig["sent"] = asyncio.run(report())
    settle(lab, [w], app_id, w.topic)
    fig["counted"] = w.stats()["counts"].get("new", 0)
    w.stop()
    canary = f"{app_id}.canary"  # a raw id put there on purpose: proves the scan finds one
    produce(lab.broker.bootstrap, canary, [(None, raw_user(seed, 0).encode(), 1)])
    needle = RAW_ID_MARK.encode()
    hits: list[str] = []
    places = 0
    for path in [lab.root / "broker.log", *sorted(lab.root.glob("*/worker.log"))]:
        places += 1
        if path.exists() and needle in path.read_bytes():
            hits.append(f"log {path.relative_to(lab.root)}")
    for topic in list_topics(lab.broker.bootstrap):
        places += 1
        for record in consume_all(lab.broker.bootstrap, topic):
            blob = b"".join([record.key or b"", record.value or b"", *(v for _, v in record.headers)])
            if needle in blob:
                hits.append(f"topic {topic}")
                break
    for other in lab.workers:
        if other.running() or not (other.home / "chdb").is_dir():
            continue
        for table, text in read_chdb(other.home / "chdb", "dump").items():
            places += 1
            if RAW_ID_MARK in text:
                hits.append(f"table {table} in {other.home.name}")
    fig.check("the scan finds the canary raw id", f"topic {canary}" in hits, hits)
    hits = [h for h in hits if h != f"topic {canary}"]
    fig.update({"places_scanned": places, "raw_ids_found_in": hits, "stored": None, "lost": None, "double": None})
    fig.check("the reporter's events counted", fig["counted"] == n, fig["counted"])
    fig.check("no raw user id anywhere", not hits, hits)
    return fig.finish(started)
