"""``tokenbrake pager``, ``tokenbrake alerts test --route ID`` and ``tokenbrake alerts list``."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import sys
from typing import Any

import aiohttp

from tokenbrake.streams.paging.delivery import RouteRunner
from tokenbrake.streams.paging.incidents import Incident, dedup_key_of
from tokenbrake.streams.paging.receivers import notice_of
from tokenbrake.streams.paging.routes import RoutesError, RoutesFile, Secrets, load_routes, read_secrets
from tokenbrake.streams.settings import Settings

log = logging.getLogger("tokenbrake.pager")


def load_checked(settings: Settings) -> tuple[RoutesFile, dict[str, Secrets]]:
    """The routes file and its secrets, or :class:`RoutesError` naming every problem."""
    routes = load_routes(settings.paging_routes_path)
    return routes, read_secrets(routes)


def run_pager(settings: Settings, bootstrap: str) -> int:
    from tokenbrake.streams.logs import configure
    from tokenbrake.streams.paging.pager import Pager, serve_status

    configure(settings.log_level)
    try:
        routes, secrets = load_checked(settings)
    except RoutesError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if not routes.routes:
        print("no routes: set TOKENBRAKE_PAGING_ROUTES_PATH to a routes file", file=sys.stderr)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        pager = Pager(settings, bootstrap, routes, secrets)
        await pager.start()
        web = await serve_status(pager, settings.web_host, settings.pager_web_port)
        log.info("pager started", extra={"routes": [r.id for r in routes.routes], "port": settings.pager_web_port})
        try:
            await pager.run(stop)
        finally:
            await web.cleanup()
            await pager.stop()

    asyncio.run(main())
    return 0


def test_incident(route_id: str, now_ms: int) -> Incident:
    series = f"tokenbrake_test|{route_id}|tenant=tokenbrake-test/feature=*/user=*/model=*"
    return Incident(series=series, dedup_key=dedup_key_of(f"{series}|{now_ms}"), rule="tokenbrake_test",
                    scope={"tenant_id": "tokenbrake-test", "feature_id": None, "user_id": None, "model": None},
                    scope_key="tenant=tokenbrake-test/feature=*/user=*/model=*", severity="critical",
                    summary=f"tokenbrake test alert through route {route_id}: nothing is wrong", observed="0",
                    threshold="0", opened_ms=now_ms)


async def send_test(settings: Settings, route_id: str, now_ms: int) -> list[tuple[str, Any]]:
    """Trigger then resolve a test incident through one route; what the receiver answered."""
    routes, secrets = load_checked(settings)
    if not routes.routes:
        raise RoutesError("no routes: set TOKENBRAKE_PAGING_ROUTES_PATH to a routes file")
    route = routes.route(route_id)
    incident = test_incident(route_id, now_ms)

    async def ignore(*_: Any) -> None:
        return None

    answers = []
    async with aiohttp.ClientSession() as session:
        runner = RouteRunner(route, secrets[route.id], session, random.Random(), ignore)  # noqa: S311
        for action in ("trigger", "resolve"):
            incident.state = "resolved" if action == "resolve" else "open"
            outcome = await runner.deliver(notice_of(incident, action, now_ms, settings.grafana_url, test=True),
                                           route.max_attempts)
            answers.append((action, outcome))
    return answers


def cmd_alerts_test(settings: Settings, route_id: str) -> int:
    from tokenbrake.streams.paging.pager import wall_ms

    try:
        answers = asyncio.run(send_test(settings, route_id, wall_ms()))
    except (RoutesError, KeyError) as exc:
        print(str(exc).strip("'\""), file=sys.stderr)
        return 2
    ok = True
    for action, outcome in answers:
        ok &= outcome.ok
        answer = f"HTTP {outcome.status}" if outcome.status is not None else "no answer"
        detail = outcome.answer.strip() or (outcome.error or "")
        print(f"{action}: {answer} after {outcome.attempts} attempt(s){': ' + detail[:300] if detail else ''}")
    return 0 if ok else 1


def cmd_alerts_list(settings: Settings, bootstrap: str, as_json: bool) -> int:
    from rich.console import Console
    from rich.table import Table

    from tokenbrake.schemas.codec import dumps
    from tokenbrake.streams.broker import ensure_topics
    from tokenbrake.streams.paging.pager import incident_row, read_incidents

    async def read() -> dict[str, Incident]:
        await ensure_topics(bootstrap, {settings.topic_incidents: 1}, {settings.topic_incidents})  # as the pager does
        return await read_incidents(bootstrap, settings.topic_incidents)

    incidents = asyncio.run(read())
    rows = [incident_row(i) for i in sorted(incidents.values(), key=lambda i: i.opened_ms) if i.state != "resolved"]
    if as_json:
        sys.stdout.write(dumps(rows).decode() + "\n")
        return 0
    table = Table(title=f"open incidents ({len(rows)})")
    for col in ("rule", "scope", "severity", "since", "delivered to", "last delivery error"):
        table.add_column(col)
    for r in rows:
        state = "" if r["state"] == "open" else " (resolving)"
        table.add_row(r["rule"] + state, r["scope"], r["severity"], r["since"], ", ".join(r["delivered_to"]) or "-",
                      r["last_error"] or "-")
    Console().print(table)
    return 0
