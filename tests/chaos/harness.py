"""Real processes for the fault suite: worker processes (``python -m tokenbrake.streams run``) and
their ClickHouse writer children, a CPU hog, a paced producer, consumer-group lag, and
chdb directories read in a separate process (only one process may open a chdb directory,
and one process can hold only one chdb session).

Nothing here knows how the worker counts: it starts processes, sends bytes, kills, and
reads what the worker exposes (its status endpoint, the topics, ClickHouse)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tokenbrake.streams.broker import CHILD, ensure_topics, free_port
from tokenbrake.streams.status import fetch_status

ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; raise TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (each thread lists the children it started)."""
    found, todo = [], [pid]
    while todo:
        for children in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                kids = [int(c) for c in children.read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Worker:
    """One ``python -m tokenbrake.streams run`` process with its own home (faust dir, chdb dir, log)."""

    def __init__(self, bootstrap: str, home: Path, app_id: str, policies: str, partitions: int,
                 **overrides: Any) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        (home / "policies.yaml").write_text(policies or "budgets: []\n")
        self.app_id = app_id
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENBRAKE_")}
        env.update({
            "TOKENBRAKE_KAFKA_BOOTSTRAP": bootstrap, "TOKENBRAKE_HOME": str(home), "TOKENBRAKE_APP_ID": app_id,
            "TOKENBRAKE_TOPIC_USAGE": f"{app_id}.usage", "TOKENBRAKE_TOPIC_DLQ": f"{app_id}.dlq",
            "TOKENBRAKE_TOPIC_CONTROL": f"{app_id}.control", "TOKENBRAKE_TOPIC_ALERTS": f"{app_id}.alerts",
            "TOKENBRAKE_POLICIES_PATH": str(home / "policies.yaml"), "TOKENBRAKE_LOG_LEVEL": "info",
            "TOKENBRAKE_TOPIC_PARTITIONS": str(partitions), "TOKENBRAKE_SINK_FLUSH_INTERVAL_S": "0.5",
            "TOKENBRAKE_SINK_RETRY_MAX_S": "5", "TOKENBRAKE_CONTROL_SIGNING_KEYS": "k1:chaos-secret-16-chars",
        })
        env.update({f"TOKENBRAKE_{k.upper()}": str(v) for k, v in overrides.items()})
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.starts = 0

    @property
    def topic(self) -> str:
        return self.env["TOKENBRAKE_TOPIC_USAGE"]

    @property
    def log_path(self) -> Path:
        return self.home / "worker.log"

    def start(self, wait: bool = True, timeout_s: float = 180.0) -> Worker:
        port = free_port()
        self.env["TOKENBRAKE_WEB_PORT"] = str(port)
        self.url = f"http://127.0.0.1:{port}/tokenbrake"
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== chaos harness: start #{self.starts + 1} at {time.time():.3f} ===\n".encode())
            self.proc = subprocess.Popen([sys.executable, "-m", "tokenbrake.streams", "run"], env=self.env, cwd=ROOT,
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL, **CHILD)
        self.starts += 1
        if wait:
            self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 180.0) -> float:
        started = time.monotonic()

        def ready() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.home.name} exited ({self.proc and self.proc.returncode})\n"
                                   f"{self.log_tail()}")
            return bool(self.stats().get("ready"))

        wait_for(ready, timeout_s, f"worker {self.home.name} ready", every_s=0.3)
        return time.monotonic() - started

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stats(self) -> dict[str, Any]:
        return fetch_status(f"{self.url}/stats", timeout=10)

    def status(self) -> dict[str, Any]:
        return fetch_status(f"{self.url}/status", timeout=20)

    def kill9(self) -> list[int]:
        """SIGKILL the worker and every descendant (the ClickHouse writer), all at once."""
        assert self.proc is not None
        pids = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)
        wait_for(lambda: not any(alive(p) for p in pids), 30, "killed processes gone")
        self.proc = None
        return pids

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM and wait (a graceful stop); SIGKILL after ``timeout_s``. Returns the exit code."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        kids = descendants(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in kids:  # the writer child exits when its pipe closes; never leave one holding chdb
            try:
                wait_for(lambda pid=pid: not alive(pid), 20, f"writer {pid} gone")
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
        return proc.returncode

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


class CpuHog:
    """A process spinning on one core, so timing windows open as on a loaded machine."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> CpuHog:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"], **CHILD)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


class Producer:
    """Sends messages from a thread (its own event loop), paced at ``events_per_s``; keeps
    each message's (partition, offset), or the error the broker answered."""

    def __init__(self, bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes, int]],
                 events_per_s: float | None = None, max_request_bytes: int = 32 << 20) -> None:
        self.bootstrap, self.topic, self.messages = bootstrap, topic, messages
        self.rate = events_per_s
        self.max_request = max_request_bytes
        self.results: list[tuple[int, int] | str] = []
        self.sent_events = 0
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Producer:
        self._thread.start()
        return self

    def join(self, timeout_s: float = 600) -> Producer:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError("producer did not finish")
        if self.error is not None:
            raise self.error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as exc:  # noqa: BLE001 - re-raised in join()
            self.error = exc
        finally:
            self.done.set()

    async def _produce(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                    max_batch_size=1 << 20, max_request_size=self.max_request,
                                    request_timeout_ms=60_000)
        await producer.start()
        try:
            started = time.monotonic()
            pending: list[tuple[int, asyncio.Future]] = []
            for index, (key, value, n_events) in enumerate(self.messages):
                try:
                    pending.append((index, await producer.send(self.topic, value, key=key)))
                except Exception as exc:  # noqa: BLE001 - e.g. MessageSizeTooLarge: recorded
                    pending.append((index, _failed(f"{type(exc).__name__}: {exc}")))
                self.sent_events += n_events
                if self.rate:
                    ahead = self.sent_events / self.rate - (time.monotonic() - started)
                    if ahead > 0.02:
                        await producer.flush()
                        await asyncio.sleep(ahead)
            for _, fut in pending:
                try:
                    meta = await fut
                    self.results.append((meta.partition, meta.offset))
                except Exception as exc:  # noqa: BLE001
                    self.results.append(f"{type(exc).__name__}: {exc}")
        finally:
            await producer.stop()


def _failed(error: str) -> asyncio.Future:
    fut: asyncio.Future = asyncio.get_running_loop().create_future()
    fut.set_exception(RuntimeError(error))
    return fut


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes, int]]) -> list:
    return Producer(bootstrap, topic, messages).start().join().results


async def exact_ends(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """End offsets, read past what the broker reports: Tansu answers ListOffsets with the base
    offset of the last record *batch* + 1 (see streams/faust_internals/end_offsets.py). Reads on from there until
    two fetches in a row bring nothing. Leaves ``consumer`` assigned to ``tps``."""
    ends = dict(await consumer.end_offsets(tps))
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, max(ends[tp] - 1, 0))
    empty = 0
    while empty < 2:
        batch = await consumer.getmany(*tps, timeout_ms=300)
        empty = 0 if any(batch.values()) else empty + 1
        for tp, records in batch.items():
            if records:
                ends[tp] = max(ends[tp], records[-1].offset + 1)
    return ends


async def _lag(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await exact_ends(consumer, tps)
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        return {tp.partition: ends[tp] - (committed[tp].offset if tp in committed and committed[tp].offset >= 0
                                          else 0) for tp in tps}
    finally:
        await consumer.stop()
        await admin.close()


def lag(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Per partition: end offset minus the group's committed offset."""
    return asyncio.run(_lag(bootstrap, group, topic))


async def _consume_all(bootstrap: str, topic: str, timeout_s: float) -> list[Any]:
    await ensure_topics(bootstrap, {topic: 1})
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=64 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        ends = await exact_ends(consumer, tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = True
            for tp in tps:
                if await consumer.position(tp) < ends[tp]:
                    done = False
            if done:
                break
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


def consume_all(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[Any]:
    """Every record of ``topic`` up to its end offsets at the time of the call."""
    return asyncio.run(_consume_all(bootstrap, topic, timeout_s))


async def _topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        return sorted(await admin.list_topics())
    finally:
        await admin.close()


def list_topics(bootstrap: str) -> list[str]:
    return asyncio.run(_topics(bootstrap))


def read_chdb(path: Path, what: str = "totals") -> dict[str, Any]:
    """Run ``tests.chaos.read_chdb`` on one directory in a child process; its JSON answer."""
    done = subprocess.run([sys.executable, "-m", "tests.chaos.read_chdb", str(path), what], cwd=ROOT,
                          capture_output=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"reading {path} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    return json.loads(done.stdout)
