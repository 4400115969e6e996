"""Every Grafana panel's SQL runs against real ClickHouse (chdb) with data written by the
worker's own writer; docker-compose.yml is valid for Debian's docker-compose."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tokenbrake.schemas.control import AlertEvent, ControlEvent, Reason, Scope
from tokenbrake.schemas.usage import UsageEvent
from tokenbrake.streams.decide.policies import parse_policies
from tokenbrake.streams.engine import Engine, PricedEvent
from tokenbrake.streams.price import PriceBook
from tokenbrake.streams.sink.clickhouse import (
    ClickHouseWriter,
    SinkBatch,
    alert_row,
    control_row,
    now_text,
    usage_source,
)
from tokenbrake.streams.sink.rollups import keep_totals

ROOT = Path(__file__).resolve().parents[2]
# the Enforcement dashboard has its own data and macros: tests/integration/test_grafana_enforcement.py
DASHBOARDS = sorted(p for p in (ROOT / "grafana" / "dashboards").glob("*.json") if "enforcement" not in p.name)


def expand(sql: str, tenants: list[str], frm: int, to: int) -> str:
    """The Grafana ClickHouse plugin's macros and the dashboard variables, as Grafana expands them."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)",
                 lambda m: f"{m.group(1)} >= toDateTime({frm}) AND {m.group(1)} <= toDateTime({to})", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({frm})").replace("$__toTime", f"toDateTime({to})")
    return sql.replace("${tenant:singlequote}", ", ".join(f"'{t}'" for t in tenants))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):  # noqa: ANN201
    writer = ClickHouseWriter(f"chdb://{tmp_path_factory.mktemp('ch') / 'chdb'}", "tokenbrake")
    now_ms = int(time.time() * 1000) - 120_000
    engine = Engine(parse_policies(""), PriceBook(), clock=lambda: now_ms + 40_000)
    usage = []
    for i in range(40):  # through the core, as the worker does: it is what the rollups are made of
        ev = UsageEvent(event_id=f"g{i}", ts=now_ms + i * 1000, tenant_id="acme" if i % 3 else "globex",
                        feature_id="chat" if i % 2 else "search", user_id=f"u{i % 5}", provider="openai",
                        model="gpt-4o", input_tokens=1000, output_tokens=100, attempt=int(i % 7 == 0),
                        status="error" if i % 9 == 0 else "ok", reported_cost_usd="0.0035")
        priced = engine.process(ev, 0, i)
        assert isinstance(priced, PricedEvent) and priced.cost_nanos == 3_500_000  # gpt-4o: $2.5/M in, $10/M out
        usage.append(priced)
    totals = {}
    keep_totals(engine.drain().changes["aggregates"], time.time_ns(), totals)
    scope = Scope(tenant_id="acme")
    reason = Reason(rule="budget", observed=Decimal("1"), threshold=Decimal("1"), period="day:today")
    control = ControlEvent(control_id="c1", issued_at=now_ms, scope=scope, action="downgrade",
                           downgrade_to="gpt-4o-mini", reason=reason)
    alert = AlertEvent(alert_id="a1", ts=now_ms, rule="budget", scope=scope, severity="critical", state="firing",
                       summary="over", observed=Decimal(1), threshold=Decimal(1), dedup_key="k")
    writer.write(SinkBatch([usage_source(usage, now_text())], [control_row(control)], [alert_row(alert)], totals))
    redelivered = [usage_source(usage[:10], now_text())]  # idempotent
    writer.write(SinkBatch(redelivered, totals=totals))
    yield writer
    writer.close()


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_query_runs_on_chdb(path, loaded):
    dash = json.loads(path.read_text())
    now = int(time.time())
    variable = dash["templating"]["list"][0]
    tenants = [row[0] for row in loaded.client.query(variable["query"]).result_rows]
    assert tenants == ["acme", "globex"]
    ran = 0
    for panel in dash["panels"]:
        for target in panel["targets"]:
            result = loaded.client.query(expand(target["rawSql"], tenants, now - 86_400, now + 60))
            assert result.result_rows, f"panel {panel['title']!r} returned no rows"
            ran += 1
    assert ran == len(dash["panels"]) >= 8


def test_panels_read_exact_money(loaded):
    dash = json.loads(DASHBOARDS[0].read_text())
    sql = next(p for p in dash["panels"] if p["title"].startswith("Spend today"))["targets"][0]["rawSql"]
    rows = dict(loaded.client.query(expand(sql, ["acme", "globex"], 0, 0)).result_rows)
    assert rows == {"acme": Decimal("0.0035") * 26, "globex": Decimal("0.0035") * 14}


def test_docker_compose_config_is_valid(tmp_path):
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose (Debian package) is installed by .ci/run"
    env_file = tmp_path / ".env"
    env_file.write_text("TOKENBRAKE_CONTROL_SIGNING_KEYS=k1:test\n")
    out = subprocess.run([binary, "--env-file", str(env_file), "-f", str(ROOT / "docker-compose.yml"), "config"],
                         capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    assert "kafka" in out.stdout and "clickhouse" in out.stdout and "grafana" in out.stdout
