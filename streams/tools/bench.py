"""``tokenbrake bench``: numbers that tell the truth, from one run on the embedded broker.

1. preload N usage events twice: as the reporter sends them (JSON arrays per tenant) and
   one event per message; 50 tenants x 5 features x 4 models, 100,000 distinct users;
2. floor: a raw aiokafka consumer that only decodes the same messages with orjson;
3. the full worker (validation, pricing, dedupe, aggregation, budgets, detectors,
   ClickHouse rollups to chdb) on each topic: steady-state events/s, and its RSS as it goes;
4. control latency: under 5,000 events/s of background load, a probe event crosses a
   budget and a KillSwitch in this process (the worker is another) times the decision;
5. where the CPU goes: seconds of CPU the worker, its ClickHouse writer and the broker spent
   between the 10% and 90% marks, per event (on 2 cores, 50,000 events/s leaves 40 us of
   CPU per event for all of them together).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tokenbrake.clients.killswitch import KillSwitch
from tokenbrake.schemas.codec import dumps, loads
from tokenbrake.streams.broker import CHILD, EmbeddedBroker, ensure_topics, free_port
from tokenbrake.streams.status import fetch_status
from tokenbrake.streams.tools.bench_figures import nearest_rank, rss_growth, steady_rate

MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku"),
          ("anthropic", "claude-sonnet-4-5")]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BENCH_POLICIES = """\
budgets:
  - {id: tenant-day, scope: {tenant: "*"}, period: day, limit_usd: "100000", warn_at: [0.8],
     action: {action: block}}
  - {id: probe, scope: {tenant: "*", tier: probe}, period: day, limit_usd: "0.001", action: {action: block}}
request_cost_caps:
  - {id: cap, max_usd: "5"}
tiers: [probe]  # the latency probes' own tier, declared: the worker starts without a warning
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def make_events(n: int, seed: int = 1, start_ms: int | None = None) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = start_ms or int(time.time() * 1000) - 600_000
    events = []
    for i in range(n):
        provider, model = MODELS[rng.randrange(4)]
        user = rng.randrange(100_000)  # each user belongs to one tenant: 100,000 user scopes in all
        events.append({"event_id": f"b{seed}-{i}", "ts": start + i * 600_000 // max(n, 1),
                       "tenant_id": f"t{user % 50:02d}", "feature_id": f"f{rng.randrange(5)}",
                       "user_id": f"u{user:06d}", "provider": provider, "model": model,
                       "input_tokens": rng.randrange(50, 4000), "output_tokens": rng.randrange(10, 600),
                       "attempt": 0, "status": "ok", "latency_ms": rng.randrange(100, 5000)})
    return events


def batched(events: list[dict[str, Any]], size: int) -> list[tuple[bytes, bytes]]:
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    out = []
    for e in events:
        chunk = by_tenant.setdefault(e["tenant_id"], [])
        chunk.append(e)
        if len(chunk) >= size:
            out.append((e["tenant_id"].encode(), dumps(chunk)))
            by_tenant[e["tenant_id"]] = []
    out.extend((t.encode(), dumps(c)) for t, c in by_tenant.items() if c)
    return out


async def preload(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, max_batch_size=1 << 20,
                                max_request_size=16 << 20)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def floor(bootstrap: str, topic: str, expected_events: int) -> float:
    """Events/s of a raw consumer that only decodes (the ceiling for any Python worker)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen, started = 0, time.perf_counter()
        while seen < expected_events:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if not batch:
                break
            for records in batch.values():
                for r in records:
                    value = loads(r.value)
                    seen += len(value) if isinstance(value, list) else 1
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


class Worker:
    def __init__(self, bootstrap: str, home: Path, topic: str, app_id: str) -> None:
        self.port = free_port()
        (home / "policies.yaml").write_text(BENCH_POLICIES)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENBRAKE_")}
        env.update({"TOKENBRAKE_KAFKA_BOOTSTRAP": bootstrap, "TOKENBRAKE_HOME": str(home),
                    "TOKENBRAKE_TOPIC_USAGE": topic, "TOKENBRAKE_APP_ID": app_id,
                    "TOKENBRAKE_TOPIC_CONTROL": f"{app_id}.control", "TOKENBRAKE_TOPIC_ALERTS": f"{app_id}.alerts",
                    "TOKENBRAKE_TOPIC_DLQ": f"{app_id}.dlq", "TOKENBRAKE_POLICIES_PATH": str(home / "policies.yaml"),
                    "TOKENBRAKE_WEB_PORT": str(self.port),
                    "TOKENBRAKE_LOG_LEVEL": os.environ.get("TB_BENCH_LOG", "warning")})
        self.env = env
        self.log = open(home / f"{app_id}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "tokenbrake.streams", "run"], env=env, stdout=self.log,
                                     stderr=self.log, **CHILD)
        self.url = f"http://127.0.0.1:{self.port}/tokenbrake/stats"
        self._last = 0

    def status(self) -> dict[str, Any]:
        return fetch_status(self.url, timeout=10)

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bench worker exited; see {self.log.name}")
            try:
                if self.status().get("ready"):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("bench worker not ready")

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of the worker and of its ClickHouse writer process (chdb included)."""
        out = {}
        for name, pids in self.processes().items():
            total = 0
            for pid in pids:
                try:
                    total += next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                                  if line.startswith("VmRSS:"))
                except (OSError, StopIteration):
                    continue
            out[name] = round(total / 1024, 1)
        return out

    def processes(self) -> dict[str, list[int]]:
        """The worker's pid, and its descendants' (the ClickHouse writer, started from a thread:
        each thread of a process lists its own children)."""
        descendants, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            for children in Path(f"/proc/{pid}/task").glob("*/children"):
                try:
                    found = [int(c) for c in children.read_text().split()]
                except OSError:
                    continue
                descendants += found
                todo += found
        return {"worker": [self.proc.pid], "writer": descendants}

    def counted(self) -> tuple[int, int]:
        """(events counted, usage rows stored in ClickHouse)."""
        try:
            stats = self.status()
        except OSError:
            return self._last
        counts = stats["counts"]
        self._last = (counts.get("new", 0) + counts.get("duplicate", 0) + counts.get("redelivery", 0),
                      stats["worker"]["sink"]["usage_rows_written"])
        return self._last

    def measure(self, total: int, timeout_s: float = 240, others: dict[str, list[int]] | None = None) -> dict[str, Any]:
        """Steady-state rates between 10% and 90% of ``total``: events decided, and events
        stored in ClickHouse (the whole pipeline); RSS at 25/50/100% of the events decided;
        CPU microseconds per event of the worker, its writer and ``others`` (the broker)
        between the same marks."""
        marks: dict[tuple[str, float], tuple[float, int]] = {}  # (what, fraction) -> (time, count) first seen past it
        rss: dict[str, float] = {}  # worker + writer
        worker_rss: dict[str, float] = {}  # the worker alone: what its state holds
        rss_split: dict[str, float] = {}  # at 100%, per process
        cpu: dict[float, dict[str, float]] = {}
        deadline = time.monotonic() + timeout_s
        n = stored = 0
        while stored < total and time.monotonic() < deadline:
            n, stored = self.counted()
            now = time.perf_counter()
            for what, value in (("decided", n), ("stored", stored)):
                for frac in (0.1, 0.9):
                    if value >= total * frac and (what, frac) not in marks:
                        marks[(what, frac)] = (now, value)
                        if what == "decided":
                            pids = {**self.processes(), **(others or {})}  # the writer starts late
                            cpu[frac] = {name: sum(map(cpu_seconds, ps)) for name, ps in pids.items()}
            for frac in (0.25, 0.5, 1.0):
                if n >= total * frac and f"{frac:.0%}" not in rss:
                    by_process = self.rss_mb()
                    rss[f"{frac:.0%}"] = round(sum(by_process.values()), 1)
                    worker_rss[f"{frac:.0%}"] = by_process.get("worker", 0.0)
                    if frac == 1.0:
                        rss_split = by_process
            time.sleep(0.1)

        def rate(what: str) -> int | None:
            """None, not 0, when the run was too short (or too slow) to see both marks apart."""
            return steady_rate(marks.get((what, 0.1)), marks.get((what, 0.9)))

        per_event = None
        if 0.1 in cpu and 0.9 in cpu and rate("decided"):
            decided = marks[("decided", 0.9)][1] - marks[("decided", 0.1)][1]
            per_event = {name: round((cpu[0.9][name] - cpu[0.1][name]) / decided * 1e6, 1) for name in cpu[0.9]}
            per_event["total"] = round(sum(per_event.values()), 1)
        growth = rss_growth(worker_rss.get("50%"), worker_rss.get("100%"), total)
        return {"events_per_s": rate("decided"), "stored_events_per_s": rate("stored"), "counted": n,
                "stored": stored, "rss_mb": rss, "rss_mb_at_end": rss_split, "rss_growth_mb_per_100k_events": growth,
                "cpu_us_per_event": per_event}

    def wait_sink_drained(self, rows: int, timeout_s: float = 120) -> float:
        """Seconds until every counted row is in ClickHouse (the latency probes measure the
        steady state, not the tail of a backlog)."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            try:
                sink = self.status()["worker"]["sink"]
                if sink["usage_rows_written"] >= rows and sink["buffered_rows"] == 0:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        return round(time.perf_counter() - started, 1)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            self.log.close()
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def control_latency(bootstrap: str, worker: Worker, app_id: str, probes: int, load_rate: int) -> dict:
    """Probe events cross the tiny 'probe' budget under background load; a KillSwitch here
    (the worker is another process) times produce -> decision visible."""
    topic = worker.env["TOKENBRAKE_TOPIC_USAGE"]
    ks = KillSwitch(bootstrap, f"{app_id}.control")
    await ks.start()
    seen: dict[str, float] = {}
    ks.on_change.append(lambda c: seen.setdefault(c.scope.tenant_id, time.perf_counter()))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=2)
    await producer.start()
    stop = asyncio.Event()

    async def background() -> None:
        i = 0
        while not stop.is_set():
            tick = time.perf_counter()
            chunk = make_events(load_rate // 10, seed=10_000 + i)
            for key, value in batched(chunk, 100):
                await producer.send(topic, value, key=key)
            i += 1
            await asyncio.sleep(max(0.0, 0.1 - (time.perf_counter() - tick)))

    load = asyncio.create_task(background())
    await asyncio.sleep(3)  # reach steady state
    latencies = []
    gaps = random.Random(7)
    budget_end = time.perf_counter() + 90  # the whole probe phase is bounded
    sent_probes = 0
    for i in range(probes):
        if time.perf_counter() > budget_end:
            break
        sent_probes += 1
        tenant = f"probe-{uuid.uuid4().hex[:8]}"
        event = {**make_events(1, seed=99_000 + i)[0], "tenant_id": tenant, "tenant_tier": "probe",
                 "event_id": uuid.uuid4().hex, "ts": int(time.time() * 1000),
                 "model": "gpt-4o", "provider": "openai", "input_tokens": 4000, "output_tokens": 500}
        sent = time.perf_counter()
        await producer.send_and_wait(topic, dumps(event), key=tenant.encode())
        deadline = sent + 10
        while tenant not in seen and time.perf_counter() < deadline:
            await asyncio.sleep(0.001)
        if tenant in seen:
            latencies.append((seen[tenant] - sent) * 1000)
        # a random gap, not a fixed one: with a fixed 50 ms the next probe went out at the same
        # phase of the brokers' fetch cycles as the last one was seen, and each run locked onto
        # one phase (medians of 29-31 or 37-41 ms, p99 30 ms apart, for the same code)
        await asyncio.sleep(gaps.uniform(0.03, 0.08))
    stop.set()
    await load
    await producer.stop()
    await ks.stop()
    latencies.sort()
    if not latencies:
        return {"control_latency_ms_p50": None, "control_latency_ms_p99": None, "probes_seen": 0,
                "probes": sent_probes}
    return {"control_latency_ms_p50": round(statistics.median(latencies), 1),
            "control_latency_ms_p90": round(nearest_rank(latencies, 0.90), 1),
            "control_latency_ms_p99": round(nearest_rank(latencies, 0.99), 1),
            "control_latency_ms_max": round(latencies[-1], 1), "probes_seen": len(latencies), "probes": sent_probes}


def core_cost(n: int = 50_000) -> dict[str, float]:
    """Microseconds per event of the pure core (no Kafka): validation, and the engine with and
    without the detectors, on the same events. The detectors' share is the difference."""
    from pydantic import TypeAdapter

    from tokenbrake.schemas.usage import UsageEvent
    from tokenbrake.streams.decide.policies import parse_policies
    from tokenbrake.streams.engine import Engine
    from tokenbrake.streams.price import PriceBook

    raw = dumps(make_events(n, seed=5))
    started = time.perf_counter()
    events = TypeAdapter(list[UsageEvent]).validate_json(raw)
    out = {"validate_us_per_event": round((time.perf_counter() - started) / n * 1e6, 1)}
    for label, detectors in (("engine_us_per_event", None), ("engine_no_detectors_us_per_event", False)):
        engine = Engine(parse_policies(BENCH_POLICIES), PriceBook(), detectors=detectors)
        started = time.perf_counter()
        for i, event in enumerate(events):
            engine.process(event, 0, i)
            if i % 1000 == 0:
                engine.tick()
                engine.drain()
        out[label] = round((time.perf_counter() - started) / n * 1e6, 1)
    out["detectors_us_per_event"] = round(out["engine_us_per_event"] - out["engine_no_detectors_us_per_event"], 1)
    return out


def run_bench(n: int, single_n: int, probes: int, load_rate: int, progress: Any = print) -> dict[str, Any]:
    results: dict[str, Any] = {"events": n, "events_single": single_n}
    progress("pure core cost per event (no Kafka)")
    results.update(core_cost(min(n, 50_000)))
    with tempfile.TemporaryDirectory(prefix="tokenbrake-bench-") as tmp, EmbeddedBroker() as broker:
        home = Path(tmp)
        bs = broker.bootstrap
        asyncio.run(ensure_topics(bs, {"bench.batched": 4, "bench.single": 4}))
        progress(f"preloading {n} events as batched messages and {single_n} as single messages")
        events = make_events(n)
        asyncio.run(preload(bs, "bench.batched", batched(events, 100)))
        asyncio.run(preload(bs, "bench.single", [(e["tenant_id"].encode(), dumps(e)) for e in events[:single_n]]))
        results["floor_events_per_s"] = round(asyncio.run(floor(bs, "bench.batched", n)))
        results["floor_events_per_s_single"] = round(asyncio.run(floor(bs, "bench.single", single_n)))
        progress(f"floor: {results['floor_events_per_s']} ev/s batched, {results['floor_events_per_s_single']} single")
        for label, topic, total in (("", "bench.batched", n), ("_single", "bench.single", single_n)):
            app_id = f"bench{label or '_batched'}-{uuid.uuid4().hex[:6]}"
            (home / app_id).mkdir()  # its own ClickHouse: no merges of the other run's parts in its figures
            worker = Worker(bs, home / app_id, topic, app_id)
            try:
                worker.wait_ready()
                m = worker.measure(total, others={"broker": [broker.pid]} if broker.pid else None)
                results[f"events_per_s{label}"] = m["events_per_s"]
                results[f"cpu_us_per_event{label}"] = m["cpu_us_per_event"]
                results[f"stored_events_per_s{label}"] = m["stored_events_per_s"]
                results[f"rss_mb{label}"] = m["rss_mb"]
                results[f"rss_mb_at_end{label}"] = m["rss_mb_at_end"]
                results[f"rss_growth_mb_per_100k_events{label}"] = m["rss_growth_mb_per_100k_events"]
                progress(f"worker{label or ' batched'}: {m['events_per_s']} ev/s decided, "
                         f"{m['stored_events_per_s']} ev/s stored in ClickHouse, rss {m['rss_mb']} MB, "
                         f"CPU us/event {m['cpu_us_per_event']}")
                if not label:
                    results["sink_drain_s"] = worker.wait_sink_drained(total)
                    progress(f"control latency: {probes} probes under {load_rate} ev/s of background load")
                    results.update(asyncio.run(control_latency(bs, worker, app_id, probes, load_rate)))
            finally:
                worker.stop()
        for label in ("", "_single"):
            if results.get(f"floor_events_per_s{label}") and results.get(f"events_per_s{label}"):
                results[f"ratio_to_floor{label}"] = round(results[f"events_per_s{label}"] /
                                                          results[f"floor_events_per_s{label}"], 3)
    return results
