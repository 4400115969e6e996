"""``make demo``: the whole loop on the embedded stack, live, in under three minutes.

A broker (Tansu) and a worker (Faust + chdb) start; a stand-in service replays the Azure
conversation trace as four tenants, sped up, and obeys its KillSwitch: when acme overruns
its daily budget it is downgraded to gpt-4o-mini, then blocked; the free tier is blocked at
its monthly cap. The terminal shows spend and controls live; at the end the worker stops
(flushing to ClickHouse) and a summary is read back from ClickHouse.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from tokenbrake.clients.killswitch import KillSwitch
from tokenbrake.schemas.control import ControlEvent
from tokenbrake.streams.broker import CHILD, EmbeddedBroker, ensure_topics, free_port
from tokenbrake.streams.runner import worker_topics
from tokenbrake.streams.settings import Settings
from tokenbrake.streams.state.keys import scope_feature, scope_tenant
from tokenbrake.streams.status import fetch_status
from tokenbrake.streams.tools.publish import publish
from tokenbrake.streams.tools.replay import FEATURES, azure_trace_path, trace_events

POLICIES = Path(__file__).with_name("demo_policies.yaml")
CHEAP = {"gpt-4o-mini": "openai"}


class Service:
    """Stands in for an LLM-backed service: asks the kill switch before each call."""

    def __init__(self, ks: KillSwitch) -> None:
        self.ks = ks
        self.outcomes: Counter[str] = Counter()
        self.log: list[str] = []
        ks.on_change.append(self._on_control)

    def _on_control(self, control: ControlEvent) -> None:
        scope = control.scope
        where = "/".join(x for x in (scope.tenant_id, scope.feature_id or "*", scope.user_id, scope.model) if x)
        detail = f" -> {control.downgrade_to}" if control.downgrade_to else \
            (f" {control.max_rps} rps" if control.max_rps else "")
        self.log.append(f"{time.strftime('%H:%M:%S')} [bold]{control.action}[/] {where}{detail}  "
                        f"[dim]{control.reason.rule} {control.reason.period}: "
                        f"${_cents(control.reason.observed)} of ${_cents(control.reason.threshold)}[/]")

    def call(self, event: dict[str, Any]) -> dict[str, Any] | None:
        decision = self.ks.decide(event["tenant_id"], event["feature_id"], model=event["model"])
        if not decision.admit():
            self.outcomes["blocked" if decision.action == "block" else "throttled"] += 1
            return None
        if decision.action == "downgrade" and decision.downgrade_to:
            self.outcomes["downgraded"] += 1
            model = decision.downgrade_to
            return {**event, "model": model, "provider": CHEAP.get(model, event["provider"])}
        self.outcomes["allowed"] += 1
        return event


def _view(status: dict[str, Any], service: Service, sent: int, total: int) -> Group:
    spend = Table(title="spend today (from the worker)", expand=False)
    for col in ("tenant", *FEATURES, "total $", "requests"):
        spend.add_column(col, justify="right" if col != "tenant" else "left")
    rows = {r["scope"]: r for r in status.get("spend", [])}
    tenants = sorted({s.split("|")[0][2:] for s in rows if "|" not in s})
    for tenant in tenants:
        cells = [f"{Decimal_fmt(rows.get(scope_feature(tenant, f), {}).get('today_usd'))}" for f in FEATURES]
        tot = rows.get(scope_tenant(tenant), {})
        spend.add_row(tenant, *cells, Decimal_fmt(tot.get("today_usd")), str(tot.get("today_requests", 0)))
    controls = Table(title="control events seen by the service's KillSwitch", expand=False)
    controls.add_column("event")
    for line in service.log[-8:]:
        controls.add_row(line)
    outcomes = service.outcomes
    head = (f"replayed {sent}/{total} calls  |  allowed {outcomes['allowed']}  downgraded {outcomes['downgraded']}  "
            f"blocked {outcomes['blocked']}  throttled {outcomes['throttled']}  |  "
            f"alerts {status.get('worker', {}).get('alerts', 0)}")
    return Group(head, spend, controls)


def Decimal_fmt(value: str | None) -> str:  # noqa: N802 - display helper
    return _cents(Decimal(value)) if value else "-"


def _cents(value: Decimal) -> str:
    return str(Decimal(value).quantize(Decimal("0.01")))


async def _replay(settings: Settings, bootstrap: str, web: str, speed: float, console: Console) -> Service:
    start_ms = int(time.time() * 1000) + 500
    events = list(trace_events(azure_trace_path(), "azure", speed, start_ms))
    ks = KillSwitch(bootstrap, settings.topic_control, **settings.control_view_kwargs())
    await ks.start()
    service = Service(ks)
    sent = 0
    status: dict[str, Any] = {}

    def on_sent(n: int) -> None:
        nonlocal sent
        sent = n

    with Live(_view(status, service, 0, len(events)), console=console, refresh_per_second=4) as live:
        task = asyncio.create_task(publish(bootstrap, settings.topic_usage, events, pace=True, batch=1,
                                           on_sent=on_sent, skip=service.call))
        while not task.done():
            await asyncio.sleep(0.5)
            try:
                status = await asyncio.to_thread(fetch_status, web)
            except OSError:
                pass
            live.update(_view(status, service, sum(service.outcomes.values()), len(events)))
        await task
        expected = service.outcomes["allowed"] + service.outcomes["downgraded"]
        for _ in range(60):  # let the worker finish what was sent
            status = await asyncio.to_thread(fetch_status, web)
            live.update(_view(status, service, sum(service.outcomes.values()), len(events)))
            if status.get("counts", {}).get("new", 0) >= expected:
                break
            await asyncio.sleep(0.5)
    await ks.stop()
    return service


def _summary(settings: Settings, console: Console) -> None:
    from tokenbrake.streams.sink.clickhouse import connect

    client = connect(settings.resolved_clickhouse_dsn)
    db = settings.clickhouse_database
    table = Table(title="summary read back from ClickHouse (usage_events, spend_minute, control_events, alerts)")
    for col in ("tenant", "requests", "cost $", "gpt-4o calls", "gpt-4o-mini calls", "minutes"):
        table.add_column(col, justify="right" if col != "tenant" else "left")
    rows = client.query(
        f"SELECT tenant_id, count(), sum(cost_usd), countIf(model = 'gpt-4o'), countIf(model = 'gpt-4o-mini') "
        f"FROM {db}.usage_events FINAL GROUP BY tenant_id ORDER BY tenant_id").result_rows
    minutes = dict(client.query(f"SELECT tenant_id, uniqExact(window_start) FROM {db}.spend_minute FINAL "
                                "WHERE dimension = 'tenant' GROUP BY tenant_id").result_rows)
    for tenant, calls, cost, big, small in rows:
        table.add_row(tenant, str(calls), str(cost), str(big), str(small), str(minutes.get(tenant, 0)))
    console.print(table)
    for action, scope, to_model, period, observed in client.query(
            f"SELECT action, scope_key, downgrade_to, period, observed FROM {db}.control_events FINAL "
            "ORDER BY issued_at").result_rows:
        console.print(f"  control: {action} {scope} {('-> ' + to_model) if to_model else ''} "
                      f"({period}, observed ${observed})")
    alerts = client.query(f"SELECT rule, severity, count() FROM {db}.alerts FINAL GROUP BY rule, severity "
                          "ORDER BY rule, severity").result_rows
    console.print("  alerts: " + ", ".join(f"{r} {s} x{n}" for r, s, n in alerts))
    client.close()


def run_demo(speed: float = 60.0) -> int:
    console = Console()
    home = Path(".tokenbrake/demo").resolve()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    port = free_port()
    env = {**os.environ, "TOKENBRAKE_HOME": str(home), "TOKENBRAKE_POLICIES_PATH": str(POLICIES),
           "TOKENBRAKE_WEB_PORT": str(port), "TOKENBRAKE_LOG_LEVEL": "warning"}
    os.environ.update({k: v for k, v in env.items() if k.startswith("TOKENBRAKE_")})
    settings = Settings()
    started = time.monotonic()
    with EmbeddedBroker(log_path=home / "broker.log") as broker:
        console.print(f"[bold]tokenbrake demo[/]  broker {broker.bootstrap} (embedded Tansu), chdb {home / 'chdb'}")
        asyncio.run(ensure_topics(broker.bootstrap, *worker_topics(settings)))
        env["TOKENBRAKE_KAFKA_BOOTSTRAP"] = broker.bootstrap
        with open(home / "worker.log", "wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "tokenbrake.streams", "run"], env=env, stdout=log,
                                      stderr=log, **CHILD)
            try:
                web = f"http://127.0.0.1:{port}/tokenbrake/status"
                if not _wait_ready(web, worker):
                    console.print(f"[red]worker did not start; see {home / 'worker.log'}[/]")
                    return 1
                console.print(f"worker ready in {time.monotonic() - started:.1f}s; replaying the Azure trace "
                              f"(58 min at {speed:g}x) as acme, globex, initech, umbrella (free tier)")
                service = asyncio.run(_replay(settings, broker.bootstrap, web, speed, console))
            finally:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()
    _summary(settings, console)
    console.print(f"service outcomes: {dict(service.outcomes)}; done in {time.monotonic() - started:.0f}s, "
                  "nothing left running")
    return 0


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if fetch_status(url).get("ready"):
                return True
        except OSError:
            pass
        time.sleep(0.3)
    return False
