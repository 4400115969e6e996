"""The pager: its own consumer of the alerts topic, turning AlertEvents into pages.

A separate process (``tokenbrake pager``; ``tokenbrake run`` starts one when a routes file is
set) in its own consumer group: nothing it does (a hanging receiver, a retry storm, a
crash) can delay a decision or a control, which the worker publishes without waiting on it.

Incidents live in a compacted topic (key = the incident's series), read back in full at
start and on every partition assignment. Per batch of alerts, in this order:
  1. apply each alert to its incident (pure: ``streams.paging.incidents``);
  2. write the changed incidents to the incidents topic and wait for the broker
     (a crash before this: the alerts are read again and apply the same way);
  3. commit the alerts' offsets (a crash before this: the alerts are read again and change
     nothing, since each incident remembers the alerts it applied);
  4. reconcile: each route's pending action, derived from its incident, is queued once.
After each delivery the incident is written again (sent, dead, last error). A crash between
a receiver's 2xx and that write sends one notice again after the restart: PagerDuty and
Alertmanager fold it (same dedup_key, same labels), the webhook repeats its
X-Tokenbrake-Delivery id, Slack may show it twice. That window is all of "at least once".
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from pydantic import ValidationError

from tokenbrake.schemas.codec import dumps
from tokenbrake.schemas.control import AlertEvent
from tokenbrake.streams.broker import ensure_topics
from tokenbrake.streams.paging.delivery import Job, Outcome, RouteRunner
from tokenbrake.streams.paging.incidents import (
    Incident,
    advance,
    apply_alert,
    delivered,
    expired,
    failed,
    pending,
    repost_due,
    series_of,
)
from tokenbrake.streams.paging.receivers import iso, notice_of
from tokenbrake.streams.paging.routes import RoutesFile, Secrets
from tokenbrake.streams.settings import Settings

log = logging.getLogger("tokenbrake.pager")


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def read_incidents(bootstrap: str, topic: str) -> dict[str, Incident]:
    """Every incident on the compacted topic, latest per key (tombstones delete)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, Incident] = {}
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(tp, timeout_ms=500)).values():
                for rec in records:
                    key = rec.key.decode()
                    if rec.value is None:
                        found.pop(key, None)
                        continue
                    try:
                        found[key] = Incident.model_validate_json(rec.value)
                    except ValidationError:
                        log.error("unreadable incident record skipped", extra={"key": key, "offset": rec.offset})
    finally:
        await consumer.stop()
    return found


class _Takeover(ConsumerRebalanceListener):
    """On assignment the run loop reloads the incidents (another pager may have written some
    since) and rewinds to the committed offsets before it applies another alert."""

    def __init__(self, pager: Pager) -> None:
        self.pager = pager

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.pager.active = False

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.pager.active = False
        self.pager.takeover = set(assigned)


class Pager:
    def __init__(self, settings: Settings, bootstrap: str, routes: RoutesFile, secrets: dict[str, Secrets],
                 rng: random.Random | None = None) -> None:
        self.settings, self.bootstrap = settings, bootstrap
        self.routes = {r.id: r for r in routes.routes}
        self.route_list = list(routes.routes)
        self.flap_ms = routes.flap_window_ms
        self.secrets = secrets
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self.incidents: dict[str, Incident] = {}
        self.inflight: set[tuple[str, str]] = set()  # (series, route id) queued or being delivered
        self.active = False
        self.takeover: set[TopicPartition] | None = None  # assigned, incidents not reloaded yet
        self.position: int | None = None  # alerts read (next offsets of the alerts topic, summed)
        self.stats: Counter[str] = Counter()
        self.per_route: dict[str, Counter[str]] = {rid: Counter() for rid in self.routes}
        self.runners: dict[str, RouteRunner] = {}
        self._tasks: list[asyncio.Task] = []
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.session: aiohttp.ClientSession | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        await ensure_topics(self.bootstrap, {s.topic_alerts: 1, s.topic_incidents: 1, s.topic_alerts_dlq: 1},
                            {s.topic_incidents})
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await self.producer.start()
        self.session = aiohttp.ClientSession()
        for route in self.route_list:
            runner = RouteRunner(route, self.secrets[route.id], self.session, self.rng, self._on_done)
            self.runners[route.id] = runner
            self._tasks.append(asyncio.create_task(runner.run(), name=f"route-{route.id}"))
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=f"{s.app_id}-pager", enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=int(s.kafka_session_timeout_s * 1000),
            rebalance_timeout_ms=int(s.kafka_rebalance_timeout_s * 1000), fetch_max_wait_ms=s.kafka_fetch_max_wait_ms)
        await self.consumer.start()
        self.consumer.subscribe([s.topic_alerts], listener=_Takeover(self))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for closer in (self.consumer and self.consumer.stop, self.producer and self.producer.stop,
                       self.session and self.session.close):
            if closer is not None:
                try:
                    await asyncio.wait_for(closer(), 10)
                except Exception:  # stopping anyway: offsets not committed are read again
                    log.exception("pager shutdown step failed")

    async def run(self, stop: asyncio.Event) -> None:
        assert self.consumer is not None
        while not stop.is_set():
            batch = await self.consumer.getmany(timeout_ms=500, max_records=500)
            if self.takeover is not None:  # (what was fetched meanwhile is read again after the rewind)
                await self._take_over()
                continue
            if self.active:
                changed: dict[str, Incident | None] = {}
                for records in batch.values():
                    for rec in records:
                        await self._on_record(rec, changed)
                await self._persist(changed)  # 2. before 3.
                if batch:
                    await self.consumer.commit()  # 3.
                await self.tick(deliver=await self._caught_up())  # 4. (and the flap window, re-posts, expiry)

    async def _take_over(self) -> None:
        assert self.consumer is not None and self.takeover is not None
        assigned, self.takeover = self.takeover, None
        self.incidents = await read_incidents(self.bootstrap, self.settings.topic_incidents)
        for tp in assigned:
            committed = await self.consumer.committed(tp)
            if committed is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)
        self.active = bool(assigned) and self.takeover is None
        log.info("incidents loaded", extra={"incidents": len(self.incidents), "partitions": len(assigned)})

    async def _caught_up(self) -> bool:
        """Whether every alert on the topic has been applied. Deliveries wait for it: a pager
        reading a backlog (its first start, or after an outage) pages for what is open at
        the end of it, not for each incident that fired and resolved meanwhile."""
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        if not assigned:
            return False
        positions = {tp: await self.consumer.position(tp) for tp in assigned}
        self.position = sum(positions.values())
        ends = {tp: self.consumer.highwater(tp) for tp in assigned}
        return all(end is not None and positions[tp] >= end for tp, end in ends.items())

    # -- alerts in -------------------------------------------------------------------------------
    async def _on_record(self, rec: Any, changed: dict[str, Incident | None]) -> None:
        self.stats["alerts"] += 1
        try:
            alert = AlertEvent.model_validate_json(rec.value)
        except (ValidationError, ValueError) as exc:
            self.stats["bad_alerts"] += 1
            await self._dead_letter(rec.value or b"", "undecodable", None, str(exc).splitlines()[0][:500])
            return
        series = series_of(alert)
        new = apply_alert(self.incidents.get(series), alert, self.route_list, wall_ms())
        if new is None:
            self.stats["alerts_ignored"] += 1  # a repeat, a redelivery, a resolve of nothing
            return
        self.incidents[series] = new
        changed[series] = new

    async def tick(self, deliver: bool = True) -> None:
        self.stats["ticks"] += 1
        now = wall_ms()
        changed: dict[str, Incident | None] = {}
        for series, inc in list(self.incidents.items()):
            moved = advance(inc, now, self.flap_ms)
            if moved is not None:
                self.incidents[series] = changed[series] = moved
            elif expired(inc, now) and not any(s == series for s, _ in self.inflight):
                del self.incidents[series]
                changed[series] = None  # a tombstone: the topic forgets it too
        await self._persist(changed)
        if deliver:
            self.reconcile(now)
        else:
            self.stats["ticks_catching_up"] += 1

    def reconcile(self, now: int) -> None:
        for series, inc in self.incidents.items():
            for route_id in inc.routes:
                route = self.routes.get(route_id)
                if route is None or (series, route_id) in self.inflight:
                    continue  # a route since removed from the file gets nothing more
                action, repost = pending(inc, route, now), False
                if action is None:
                    action = repost_due(inc, route, now)
                    repost = action is not None
                if action is None:
                    continue
                notice = notice_of(inc, action, now, self.settings.grafana_url)
                if self.runners[route_id].offer(Job(series, route_id, action, notice, repost)):
                    self.inflight.add((series, route_id))
                else:  # the route's queue is full: still pending, offered again on the next tick
                    self.stats["deferred_queue_full"] += 1

    # -- outcomes --------------------------------------------------------------------------------
    async def _on_done(self, job: Job, outcome: Outcome) -> None:
        route_id = job.route_id
        self.inflight.discard((job.series, route_id))
        inc = self.incidents.get(job.series)
        if inc is None:
            return
        counters = self.per_route[route_id]
        if outcome.ok:
            new = delivered(inc, route_id, job.action, wall_ms(), outcome.attempts)  # type: ignore[arg-type]
        elif job.repost:
            new = failed(inc, route_id, None, outcome.error or "", outcome.attempts)
        else:
            new = failed(inc, route_id, job.action, outcome.error or "", outcome.attempts)  # type: ignore[arg-type]
            record = {"reason": "undeliverable", "route": route_id, "kind": self.routes[route_id].kind,
                      "action": job.action, "incident": inc.dedup_key, "series": inc.series, "rule": inc.rule,
                      "severity": inc.severity, "scope": inc.scope_key, "summary": inc.summary,
                      "attempts": outcome.attempts, "last_error": outcome.error, "at": iso(wall_ms())}
            await self._dead_letter(dumps(record), "undeliverable", route_id, outcome.error or "")
            log.error("alert could not be delivered; dead-lettered",
                      extra={"route": route_id, "incident": inc.dedup_key, "action": job.action,
                             "attempts": outcome.attempts, "error": outcome.error})
        self.incidents[job.series] = new
        await self._persist({job.series: new})
        # counted once the outcome is on the broker: what the status shows survives a crash
        counters["attempts"] += outcome.attempts
        if outcome.ok:
            counters["delivered"] += 1
        else:
            counters["failures"] += 1
            if not job.repost:
                counters["dead_lettered"] += 1
                self.stats["dead_lettered"] += 1

    async def _persist(self, changed: dict[str, Incident | None]) -> None:
        if not changed:
            return
        assert self.producer is not None
        sent = [await self.producer.send(self.settings.topic_incidents, None if inc is None else dumps(inc),
                                         key=series.encode(), partition=0) for series, inc in changed.items()]
        await asyncio.gather(*sent)

    async def _dead_letter(self, value: bytes, reason: str, route_id: str | None, error: str) -> None:
        assert self.producer is not None
        headers = [("tokenbrake-reason", reason.encode()), ("tokenbrake-error", error.encode()[:4000])]
        if route_id is not None:
            headers.append(("tokenbrake-route", route_id.encode()))
        await self.producer.send_and_wait(self.settings.topic_alerts_dlq, value, headers=headers)

    # -- read side -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(), "active": self.active, "alerts_position": self.position, "stats": dict(self.stats),
            "incidents": [incident_row(i) for i in self.incidents.values() if i.state != "resolved"],
            # counters since this process started, and dead letters of the incidents kept (24 h; survives restarts)
            "routes": {rid: {"kind": r.route.kind, "queued": r.queue.qsize(), "busy": r.busy,
                             "breaker": r.breaker.state, "delivered": 0, "dead_lettered": 0, **self.per_route[rid],
                             "dead_lettered_kept": sum(1 for i in self.incidents.values()
                                                       if rid in i.routes and i.routes[rid].dead)}
                       for rid, r in self.runners.items()},
        }


def incident_row(inc: Incident) -> dict[str, Any]:
    """One line of ``tokenbrake alerts list``."""
    errors = {rid: d.last_error for rid, d in inc.routes.items() if d.last_error}
    return {"rule": inc.rule, "scope": inc.scope_key, "severity": inc.severity, "state": inc.state,
            "since": iso(inc.opened_ms), "incident": inc.dedup_key, "flaps": inc.flaps,
            "delivered_to": sorted(rid for rid, d in inc.routes.items() if d.sent == "trigger"),
            "dead_lettered": sorted(rid for rid, d in inc.routes.items() if d.dead),
            "last_error": "; ".join(f"{rid}: {e}" for rid, e in sorted(errors.items())) or None,
            "summary": inc.summary}


async def serve_status(pager: Pager, host: str, port: int) -> web.AppRunner:
    async def status(request: web.Request) -> web.Response:
        return web.Response(body=dumps(pager.status()), content_type="application/json")

    app = web.Application()
    app.router.add_get("/tokenbrake/pager", status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
