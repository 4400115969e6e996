"""The fault scenarios. Each returns its figures: sent, counted, stored, lost, double-counted,
seconds to settle, per-view details and named checks (``ok`` is True when all pass).

A scenario drives real processes on a shared embedded broker (see ``Lab``) and judges only
what an operator can see: the status endpoint, the topics, the chdb directories."""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.codec import loads
from streams.broker import EmbeddedBroker
from streams.ingest.routing import TenantRouter
from tests.chaos import observe
from tests.chaos.harness import CpuHog, Producer, Worker, consume_all, descendants, lag, produce, wait_for
from tests.chaos.workload import Workload, make_workload


@dataclass
class Lab:
    broker: EmbeddedBroker
    root: Path
    workers: list[Worker] = field(default_factory=list)
    figures: list[dict[str, Any]] = field(default_factory=list)

    def worker(self, name: str, app_id: str, policy: str, partitions: int, **overrides: Any) -> Worker:
        w = Worker(self.broker.bootstrap, self.root / name, app_id, policy, partitions, **overrides)
        self.workers.append(w)
        return w

    def close(self) -> None:
        for w in self.workers:
            w.stop()


class Figures(dict):
    def check(self, name: str, ok: bool, detail: Any = "") -> bool:
        self.setdefault("checks", []).append({"name": name, "ok": bool(ok), "detail": detail})
        return ok

    def finish(self, started: float) -> Figures:
        self["ok"] = all(c["ok"] for c in self.get("checks", []))
        self["seconds"] = round(time.monotonic() - started, 1)
        return self

    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.get("checks", []) if not c["ok"]]


def _app(kind: str) -> str:
    return f"chaos-{kind}-{uuid.uuid4().hex[:6]}"


def settle(lab: Lab, workers: list[Worker], app_id: str, topic: str, timeout_s: float = 180.0) -> float | None:
    """Seconds until the group's lag is 0 on every partition and every running worker's sink
    is empty, seen twice a second apart; None when that did not happen within ``timeout_s``."""
    started = time.monotonic()
    streak = 0

    def settled() -> bool:
        nonlocal streak
        drained = all(w.stats()["worker"]["sink"]["buffered_rows"] == 0 for w in workers if w.running())
        behind = sum(lag(lab.broker.bootstrap, app_id, topic).values())
        streak = streak + 1 if drained and behind == 0 else 0
        return streak >= 2

    try:
        wait_for(settled, timeout_s, "lag 0 and sinks drained", every_s=1.0)
    except TimeoutError:
        return None
    return round(time.monotonic() - started, 1)


def controls_on_topic(lab: Lab, app_id: str) -> list[dict[str, Any]]:
    out = []
    for record in consume_all(lab.broker.bootstrap, f"{app_id}.control"):
        if record.value is not None:
            out.append(loads(record.value))
    return out


def tenant_actions(controls: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(c["scope"]["tenant_id"], c["action"]) for c in controls if c.get("issued_by", "worker") == "worker"
            and not any(c["scope"].get(k) for k in ("feature_id", "user_id", "model"))}


def judge(fig: Figures, wl: Workload, statuses: list[dict[str, Any]] | None, dirs: list[Path],
          sent_events: int, exclude_tenants: set[str] = frozenset(), sent: tuple[list, list] | None = None
          ) -> dict[str, Any]:
    """Fill the headline figures and the exactness checks from the workers and ClickHouse."""
    day = datetime.fromtimestamp(wl.events[0]["ts"] // 1000, tz=UTC).date().isoformat()
    worker = observe.worker_tenants(statuses, day) if statuses is not None else None
    ch = observe.clickhouse(dirs, exclude_tenants)
    views = observe.compare(wl.expected, worker, ch)
    fig.update({"sent": sent_events, "expected": wl.expected.requests,
                "counted": views["worker"]["requests"] if "worker" in views else None,
                "stored": len(set(ch["usage"]) & wl.expected.event_cost.keys()), **observe.headline(views),
                "views": views})
    for name, view in views.items():
        fig.check(f"{name} exact", view["lost"] == view["double"] == view["keys_wrong"] == 0
                  and view.get("wrong_cost", 0) == 0 and view.get("missing_ids", 0) == 0,
                  {k: v for k, v in view.items() if k != "requests"})
    fig["stored_controls"] = sorted({(s, a) for s, a, _, _ in ch["controls"].values()})
    if worker is not None and views["worker"]["keys_wrong"]:  # which partitions' tenants are off, by how much
        router = TenantRouter(fig.get("partitions", 4))
        off: dict[int, list[int]] = {}
        for tenant, (req, _) in wl.expected.tenants.items():
            got = worker.get(tenant, [0, 0])[0]
            if got != req:
                off.setdefault(router.partition(tenant), []).append(got - req)
        fig["worker_off_by_partition"] = {p: sum(d) for p, d in sorted(off.items())}
    if sent is not None and views.get("usage_events", {}).get("missing_ids"):
        fig["holes"] = observe.holes(*sent, ch["by_dir"], wl.expected.event_cost.keys())
    return ch


# -- 1. kill -9 -------------------------------------------------------------------------------
def kill9(lab: Lab, seed: int, n: int = 100_000, kills: int = 3, rate: float = 1200.0) -> Figures:
    """The worker and its writer child SIGKILLed ``kills`` times at seeded random moments while
    ``n`` events flow, a CPU hog on the other core; restarted each time."""
    started = time.monotonic()
    fig = Figures(scenario="kill9", seed=seed, events=n, partitions=4)
    wl = make_workload(n, seed, prefix="k")
    policy, limit = wl.expected.policy()
    app_id = _app("kill9")
    w = lab.worker(f"kill9-{seed}-{app_id[-6:]}", app_id, policy, partitions=4)
    rng = random.Random(seed)
    fig["kills"] = []
    with CpuHog():
        w.start()
        producer = Producer(lab.broker.bootstrap, w.topic, wl.messages, events_per_s=rate).start()
        for i in range(kills):
            time.sleep(rng.uniform(0.5, 6.0))  # the fault's random moment, not a synchronisation
            try:
                stats = w.stats()
                counted = stats["counts"]
            except OSError:
                counted = {}
            pids = w.kill9()
            t = time.monotonic()
            w.start()
            fig["kills"].append({"at_s": round(t - started, 1), "produced": producer.sent_events,
                                 "counts_before": counted, "pids": pids,
                                 "restart_s": round(time.monotonic() - t, 1)})
        producer.join()
        settle_s = settle(lab, [w], app_id, w.topic)
    fig["settle_s"] = settle_s
    fig.check("settled (lag 0, sink drained)", settle_s is not None)
    statuses = [w.status()]
    controls = controls_on_topic(lab, app_id)
    w.stop()
    judge(fig, wl, statuses, [w.home / "chdb"], n, sent=(wl.messages, producer.results))
    _controls(fig, wl, limit, controls)
    return fig.finish(started)


def _controls(fig: Figures, wl: Workload, limit: Any, controls: list[dict[str, Any]]) -> None:
    expected = wl.expected.controls(limit)
    issued = tenant_actions(controls)
    fig["controls"] = {"expected": len(expected), "issued_distinct": len(issued), "records": len(controls),
                       "missing": sorted(expected - issued), "unexpected": sorted(issued - expected)}
    fig.check("controls equal the exact totals' (a clean run's)", issued == expected and bool(expected),
              fig["controls"])
    fig.check("no control re-issued", len(controls) == len(expected), fig["controls"])


# -- 2. rebalance -------------------------------------------------------------------------------
def rebalance(lab: Lab, seed: int, n: int = 40_000, rate: float = 600.0, pause_s: float = 4.0) -> Figures:
    """Three workers over 8 partitions while events flow, a CPU hog on the other core: A alone,
    B joins, C joins, B SIGKILLed (with its writer), C stopped gracefully; A ends with every
    partition."""
    started = time.monotonic()
    fig = Figures(scenario="rebalance", seed=seed, events=n, partitions=8)
    wl = make_workload(n, seed, prefix="r", tenants=16)
    policy, limit = wl.expected.policy()
    app_id = _app("rebalance")
    a, b, c = (lab.worker(f"rebalance-{seed}-{x}-{app_id[-6:]}", app_id, policy, partitions=8,
                          kafka_session_timeout_s="6") for x in "abc")
    with CpuHog():  # the loaded machine of the failing runs
        a.start()
        producer = Producer(lab.broker.bootstrap, a.topic, wl.messages, events_per_s=rate).start()
        steps = []

        def step(what: str, action: Any) -> None:
            time.sleep(pause_s)  # events flow between two membership changes
            t = time.monotonic()
            result = action()
            steps.append({"step": what, "at_s": round(t - started, 1), "took_s": round(time.monotonic() - t, 1),
                          "produced": producer.sent_events, **({"result": result} if result is not None else {})})

        step("B joins", lambda: round(b.wait_ready() if b.start(wait=False) else 0, 1))
        step("C joins", lambda: round(c.wait_ready() if c.start(wait=False) else 0, 1))
        step("B SIGKILL", lambda: len(b.kill9()))
        step("C stopped gracefully", c.stop)
        fig["steps"] = steps
        producer.join()
        fig["produced_all_by_s"] = round(time.monotonic() - started, 1)
        settle_s = settle(lab, [a], app_id, a.topic, timeout_s=240)
    fig["settle_s"] = settle_s
    fig.check("settled (lag 0 on all 8 partitions, sink drained)", settle_s is not None,
              lag(lab.broker.bootstrap, app_id, a.topic))
    statuses = [a.status()]
    controls = controls_on_topic(lab, app_id)
    a.stop()
    judge(fig, wl, statuses, [w.home / "chdb" for w in (a, b, c)], n, sent=(wl.messages, producer.results))
    _controls(fig, wl, limit, controls)
    return fig.finish(started)


# -- 3. ClickHouse away ---------------------------------------------------------------------------
def outage(lab: Lab, seed: int, n: int = 40_000, away_s: float = 60.0, rate: float = 1500.0) -> Figures:
    """ClickHouse taken away for ``away_s`` while events flow: the writer child SIGKILLed and
    its chdb directory replaced by a plain file (every new writer fails to open it), then put
    back. Controls must still be issued during the outage; every row exactly once after."""
    started = time.monotonic()
    fig = Figures(scenario="clickhouse_outage", seed=seed, events=n, away_s=away_s, partitions=4)
    wl = make_workload(n, seed, prefix="o")
    policy, limit = wl.expected.policy()
    app_id = _app("outage")
    w = lab.worker(f"outage-{seed}-{app_id[-6:]}", app_id, policy, partitions=4)
    w.start()
    first = len(wl.messages) // 5  # before the outage: no tenant reaches its limit yet
    early = Producer(lab.broker.bootstrap, w.topic, wl.messages[:first]).start().join()
    settle(lab, [w], app_id, w.topic)
    chdb, away = w.home / "chdb", w.home / "chdb.away"
    before = len(controls_on_topic(lab, app_id))
    for pid in descendants(w.proc.pid):
        os.kill(pid, signal.SIGKILL)
    chdb.rename(away)
    chdb.write_text("ClickHouse is away (chaos suite)\n")
    t_away = time.monotonic()
    producer = Producer(lab.broker.bootstrap, w.topic, wl.messages[first:], events_per_s=rate).start()
    failures = wait_for(lambda: w.stats()["worker"]["sink"]["failures"], 30, "a failed write reported")
    producer.join()
    wait_for(lambda: time.monotonic() - t_away >= away_s, away_s + 5, "the outage's end", every_s=0.5)
    during = len(controls_on_topic(lab, app_id)) - before
    sink = w.stats()["worker"]["sink"]
    chdb.unlink()
    away.rename(chdb)
    fig.update({"controls_during_outage": during, "sink_during_outage": sink, "sink_failures_seen": failures})
    fig.check("a control issued during the outage", during > 0, during)
    fig.check("the outage was reported (failures, last_error)", bool(sink["failures"] and sink["last_error"]), sink)
    settle_s = settle(lab, [w], app_id, w.topic)
    fig["settle_s"] = settle_s
    fig.check("settled after ClickHouse came back", settle_s is not None)
    statuses = [w.status()]
    controls = controls_on_topic(lab, app_id)
    w.stop()
    judge(fig, wl, statuses, [chdb], n, sent=(wl.messages, early.results + producer.results))
    _controls(fig, wl, limit, controls)
    return fig.finish(started)


# -- 4. replay -----------------------------------------------------------------------------------
def replay(lab: Lab, seed: int, n: int = 30_000) -> Figures:
    """The whole input, then the whole input again twice: nothing may change."""
    started = time.monotonic()
    fig = Figures(scenario="replay_twice", seed=seed, events=n)
    wl = make_workload(n, seed, prefix="p")
    policy, limit = wl.expected.policy()
    app_id = _app("replay")
    w = lab.worker(f"replay-{seed}-{app_id[-6:]}", app_id, policy, partitions=4)
    w.start()
    Producer(lab.broker.bootstrap, w.topic, wl.messages).start().join()
    settle(lab, [w], app_id, w.topic)
    first = w.status()
    controls_first = len(controls_on_topic(lab, app_id))
    for _ in range(2):
        Producer(lab.broker.bootstrap, w.topic, wl.messages).start().join()
    settle_s = settle(lab, [w], app_id, w.topic)
    fig["settle_s"] = settle_s
    fig.check("settled", settle_s is not None)
    second = w.status()
    fig["counts"] = second["counts"]
    fig.check("every replayed event recognised as a duplicate", second["counts"].get("duplicate", 0) == 2 * n,
              second["counts"])
    day = datetime.fromtimestamp(wl.events[0]["ts"] // 1000, tz=UTC).date().isoformat()
    fig.check("worker totals unchanged by the replays",
              observe.worker_tenants([first], day) == observe.worker_tenants([second], day))
    controls = controls_on_topic(lab, app_id)
    fig.check("no control issued by the replays", len(controls) == controls_first, (controls_first, len(controls)))
    w.stop()
    judge(fig, wl, [second], [w.home / "chdb"], 3 * n)
    _controls(fig, wl, limit, controls)
    return fig.finish(started)


def cleanup_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- 5. hostile messages ---------------------------------------------------------------------------
def hostile(lab: Lab, seed: int, n: int = 5000, every: int = 3) -> Figures:
    """Every hostile kind of ``tests.chaos.hostile`` interleaved with ``n`` valid events (one
    hostile message after every ``every`` valid ones, the valid tail after the last): each
    must be dead-lettered with a reason, the worker stay up, every valid event counted once."""
    from tests.chaos.hostile import UNPRICED_TENANT, cases

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
        messages.append((b"hostile", case.value, len(case.valid_inside)))
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
    """The last exception line of the worker's log since its last start."""
    text = w.log_path.read_text(errors="replace").rsplit("=== chaos harness: start", 1)[-1]
    lines = [ln for ln in text.splitlines() if "Error" in ln or "Exception" in ln or "error" in ln[:40]]
    return lines[-1][:300] if lines else ""


# -- 6. privacy ------------------------------------------------------------------------------------
def privacy(lab: Lab, seed: int, n: int = 2000) -> Figures:
    """Events reported through ``UsageReporter`` with raw user ids (e-mail addresses); then no
    raw id (every one ends in ``@example.com``, including the other scenarios' users) in any
    worker log, the broker's log, any topic on the broker or any table of any chdb directory."""
    import asyncio

    from clients.reporter import UsageReporter
    from tests.chaos.harness import list_topics, read_chdb
    from tests.chaos.workload import RAW_ID_MARK, SALT, raw_user

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
