"""Real embedded parts: one Tansu broker per session; each test's worker is a real
`python -m tokenbrake.streams run` process with its own topics, consumer group and chdb directory."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tokenbrake.schemas.codec import dumps
from tokenbrake.streams.broker import CHILD, EmbeddedBroker, ensure_topics, free_port
from tokenbrake.streams.sink.clickhouse import ClickHouseWriter
from tokenbrake.streams.status import fetch_status

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "broker.log")
    b.start()
    yield b
    b.stop()


class WorkerProc:
    def __init__(self, env: dict[str, str], home: Path) -> None:
        self.env, self.home = env, home
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{env['TOKENBRAKE_WEB_PORT']}/tokenbrake/status"

    def __getattr__(self, name: str) -> str:  # worker.topic_usage etc.
        return self.env[f"TOKENBRAKE_{name.upper()}"]

    def start(self, timeout_s: float = 60.0) -> WorkerProc:
        self.env["TOKENBRAKE_WEB_PORT"] = str(free_port())
        self.url = f"http://127.0.0.1:{self.env['TOKENBRAKE_WEB_PORT']}/tokenbrake/status"
        log = open(self.home / "worker.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "tokenbrake.streams", "run"], env=self.env, cwd=ROOT,
                                     stdout=log, stderr=log, **CHILD)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_tail()
            try:
                if fetch_status(self.url).get("ready"):
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not ready in {timeout_s}s\n{self.log_tail()}")

    def status(self) -> dict[str, Any]:
        return fetch_status(self.url)

    def wait_counted(self, n: int, timeout_s: float = 30.0, key: str = "new") -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status()
            if status["counts"].get(key, 0) >= n:
                return status
            time.sleep(0.2)
        raise AssertionError(f"worker counted {status.get('counts')} not {n} {key}\n{self.log_tail()}")

    def wait_flushed(self, rows: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            sink = self.status()["worker"]["sink"]
            if sink["rows_written"] >= rows and sink["buffered_rows"] == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"sink did not flush {rows} rows: {self.status()['worker']['sink']}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self) -> str:
        path = self.home / "worker.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture
def worker_env(broker: EmbeddedBroker, tmp_path: Path):  # noqa: ANN201
    """A factory: worker_env(policies_yaml, **settings) -> WorkerProc (not started)."""
    procs: list[WorkerProc] = []
    run_id = uuid.uuid4().hex[:8]

    def make(policies: str = "", **overrides: str) -> WorkerProc:
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        (home / "policies.yaml").write_text(policies or "budgets: []\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENBRAKE_")}
        env.update({
            "TOKENBRAKE_KAFKA_BOOTSTRAP": broker.bootstrap, "TOKENBRAKE_HOME": str(home),
            "TOKENBRAKE_APP_ID": f"tb-{run_id}", "TOKENBRAKE_TOPIC_USAGE": f"usage-{run_id}",
            "TOKENBRAKE_TOPIC_DLQ": f"dlq-{run_id}", "TOKENBRAKE_TOPIC_CONTROL": f"control-{run_id}",
            "TOKENBRAKE_TOPIC_ALERTS": f"alerts-{run_id}", "TOKENBRAKE_POLICIES_PATH": str(home / "policies.yaml"),
            "TOKENBRAKE_WEB_PORT": "0", "TOKENBRAKE_LOG_LEVEL": "info", "TOKENBRAKE_TOPIC_PARTITIONS": "2",
            "TOKENBRAKE_SINK_FLUSH_INTERVAL_S": "0.3", "TOKENBRAKE_CONTROL_SIGNING_KEYS": "k1:test-secret-of-16-chars",
        })
        env.update({f"TOKENBRAKE_{k.upper()}": str(v) for k, v in overrides.items()})
        proc = WorkerProc(env, home)
        procs.append(proc)
        return proc

    yield make
    for proc in procs:
        proc.stop()


async def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    """A plain Kafka producer, as any service in any language would use."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def consume_all(bootstrap: str, topic: str, expect: int = 0, timeout_s: float = 10.0) -> list[Any]:
    """Every record of ``topic`` from the beginning (waits for at least ``expect``)."""
    await ensure_topics(bootstrap, {topic: 1})
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for recs in batch.values():
                records.extend(recs)
            if not batch and len(records) >= expect:
                break
        return records
    finally:
        await consumer.stop()


def recent_ms() -> int:
    """A minute ago, but never before today's UTC midnight: tests read "today" totals back,
    and in the first minute of a UTC day "a minute ago" is yesterday (a host-clock dependence)."""
    now = int(time.time() * 1000)
    return max(now - 60_000, now - now % 86_400_000)


def event_json(**kw: Any) -> dict[str, Any]:
    base = {"event_id": uuid.uuid4().hex, "ts": recent_ms(), "tenant_id": "acme",
            "feature_id": "chat", "user_id": "u1", "provider": "openai", "model": "gpt-4o",
            "input_tokens": 1000, "output_tokens": 100}
    base.update(kw)
    return base


def msg(obj: Any, key: str = "acme") -> tuple[bytes, bytes]:
    return key.encode(), dumps(obj)


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


@pytest.fixture
def writers(tmp_path):  # noqa: ANN201
    """Two ClickHouse writers on two databases of one chdb (one engine path per process): the
    Arrow and JSON paths of the writer, stored side by side and compared."""
    made = [ClickHouseWriter(f"chdb://{tmp_path / 'chdb'}", db) for db in ("by_json", "by_arrow")]
    yield made
    for w in made:
        w.close()
