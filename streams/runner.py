"""Process entry points: the worker (with the embedded broker when none is configured)
and the broker alone."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
import threading
from typing import TYPE_CHECKING

from tokenbrake.streams.broker import EmbeddedBroker, ensure_topics, partition_counts
from tokenbrake.streams.logs import configure, logging_config
from tokenbrake.streams.settings import Settings
from tokenbrake.streams.status import remove_worker_file, write_worker_file

if TYPE_CHECKING:
    from tokenbrake.streams.paging.supervisor import PagerSupervisor

log = logging.getLogger("tokenbrake")


def topics_of(settings: Settings) -> dict[str, int]:
    n = settings.topic_partitions
    return {settings.topic_usage: n, settings.topic_dlq: n, settings.topic_control: 1, settings.topic_alerts: 1}


def worker_topics(settings: Settings) -> tuple[dict[str, int], set[str]]:
    """Every topic the worker uses, Faust's internal ones included, and which are compacted.
    Created up front so Faust never declares topics itself (slow on some brokers)."""
    from tokenbrake.streams.engine import STORES

    n = settings.topic_partitions
    changelogs = {f"{settings.app_id}-{name}-changelog": n for name in STORES}
    topics = {**topics_of(settings), **changelogs, f"{settings.app_id}-__assignor-__leader": 1}
    if settings.otlp_enabled:  # created here only when the Collector has not created it yet
        topics[settings.topic_otlp] = n
    topics.update(outcome_topics(settings))
    return topics, {settings.topic_control, *changelogs}


def outcome_topics(settings: Settings) -> dict[str, int]:
    """The outcomes topic, when the worker reads it (see streams.outcome_flow): copartitioned
    with the usage topic, so it must have the same partition count."""
    from tokenbrake.streams.decide.policies import PolicyError, load_policies
    from tokenbrake.streams.outcome_flow import reads_outcomes

    try:
        policies = load_policies(settings.policies_path)
    except PolicyError:  # reported, with its lines, when the engine is built
        return {}
    return {settings.topic_outcomes: settings.topic_partitions} if reads_outcomes(policies) else {}


def prepare_home(settings: Settings) -> None:
    """Create ``TOKENBRAKE_HOME`` (with its parents): Faust's data directory, chdb and the broker
    log live there, and a fresh container's ``/var/lib/tokenbrake`` does not exist yet."""
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"cannot create TOKENBRAKE_HOME {settings.home}: {exc.strerror}; "
              "point TOKENBRAKE_HOME at a writable directory", file=sys.stderr)
        raise SystemExit(2) from None


def run_worker(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM. Returns the exit code."""
    import faust

    from tokenbrake.streams.heap import tune_gc
    from tokenbrake.streams.worker import Runtime

    configure(settings.log_level)
    prepare_home(settings)
    broker = pager = None
    bootstrap = settings.kafka_bootstrap
    if not bootstrap and settings.kafka_security_protocol != "PLAINTEXT":
        log.error("the embedded broker speaks PLAINTEXT only: set TOKENBRAKE_KAFKA_BOOTSTRAP for %s",
                  settings.kafka_security_protocol)
        return 2
    if not bootstrap:
        broker = EmbeddedBroker(log_path=settings.home / "broker.log")
        bootstrap = broker.start()
        print(f"bootstrap={bootstrap}", flush=True)
    try:
        asyncio.run(ensure_topics(bootstrap, *worker_topics(settings), **settings.kafka_kwargs()))
        checked = [settings.topic_usage, *outcome_topics(settings)]
        counts = asyncio.run(partition_counts(bootstrap, checked, **settings.kafka_kwargs()))
        for topic in checked:  # changelogs and tenant routing assume the usage topic's count
            if counts.get(topic) != settings.topic_partitions:
                log.error("%s has %s partitions but TOKENBRAKE_TOPIC_PARTITIONS is %d: make them equal",
                          topic, counts.get(topic), settings.topic_partitions)
                return 2
        if settings.uses_dev_key:
            log.warning("control events are signed with the development key: set TOKENBRAKE_CONTROL_SIGNING_KEYS")
        pager = start_pager(settings, bootstrap)  # its own process: it never delays a decision
        asyncio.set_event_loop(asyncio.new_event_loop())
        runtime = Runtime(settings, bootstrap)
        gc.freeze()  # everything imported and built so far lives as long as the process
        tune_gc()  # young collections rarer; full ones left to HeapAger.maybe_age (see streams.heap)
        worker = faust.Worker(runtime.app, loglevel=settings.log_level, redirect_stdouts=False,
                              logging_config=logging_config(settings.log_level), quiet=True)
        url = f"http://{settings.web_host}:{settings.web_port}/tokenbrake/status"
        print(f"worker web={url}", flush=True)
        write_worker_file(settings.home, url)  # `tokenbrake status` finds us on any port
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            return int(exc.code or 0)
        finally:
            runtime.sink.close()
            remove_worker_file(settings.home)
        return 0
    finally:
        if pager is not None:
            pager.stop()
        if broker is not None:
            broker.stop()


def start_pager(settings: Settings, bootstrap: str) -> PagerSupervisor | None:
    """``tokenbrake pager`` beside the worker when a routes file is set (see streams.paging)."""
    if settings.paging_routes_path is None or not settings.pager_in_worker:
        return None
    from tokenbrake.streams.paging.supervisor import PagerSupervisor

    return PagerSupervisor(bootstrap).start()


def run_broker(settings: Settings, port: int | None = None) -> int:
    configure(settings.log_level)
    prepare_home(settings)
    broker = EmbeddedBroker(port=port, log_path=settings.home / "broker.log")
    bootstrap = broker.start()
    asyncio.run(ensure_topics(bootstrap, topics_of(settings), {settings.topic_control}))
    print(f"bootstrap={bootstrap}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        broker.stop()
    print("broker stopped", file=sys.stderr)
    return 0
