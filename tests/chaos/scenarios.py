"""The fault scenarios. Each returns its figures: sent, counted, stored, lost, double-counted,
seconds to settle, per-view details and named checks (``ok`` is True when all pass).

A scenario drives real processes on a shared embedded broker (see ``Lab``) and judges only
what an operator can see: the status endpoint, the topics, the chdb directories."""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.chaos import observe
from tests.chaos.harness import CpuHog, Producer, Worker, consume_all, descendants, lag, wait_for
from tests.chaos.workload import Workload, make_workload
from tokenbrake.schemas.codec import loads
from tokenbrake.streams.broker import EmbeddedBroker
from tokenbrake.streams.runtime.routing import TenantRouter


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
          sent_events: int, exclude_tenants: set[str] = frozenset(), sent: tuple[list, list] | None = None,
          bootstrap_app: tuple[str, str] | None = None) -> dict[str, Any]:
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
    if bootstrap_app is not None:  # no aggregate value may be written over by an older one
        found = observe.changelog_regressions(consume_all(bootstrap_app[0], f"{bootstrap_app[1]}-aggregates-changelog"))
        fig.check("no aggregate changelog record goes back", found["regressions"] == 0, found)
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
    judge(fig, wl, statuses, [w.home / "chdb"], n, sent=(wl.messages, producer.results),
          bootstrap_app=(lab.broker.bootstrap, app_id))
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
    judge(fig, wl, statuses, [w.home / "chdb" for w in (a, b, c)], n, sent=(wl.messages, producer.results),
          bootstrap_app=(lab.broker.bootstrap, app_id))
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

