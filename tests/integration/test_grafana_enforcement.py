"""The Enforcement dashboard and the alert rules: every panel's and rule's SQL, with the
ClickHouse plugin's macros and the template variables expanded as the plugin does, runs on
chdb and returns the columns the panel expects; the files are what the generator writes."""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import yaml

from tests.finops_seed import price
from tokenbrake.schemas.control import AlertEvent, ControlEvent, Reason, Scope
from tokenbrake.schemas.outcome import OutcomeEvent
from tokenbrake.schemas.usage import UsageEvent
from tokenbrake.streams.decide.policies import parse_policies
from tokenbrake.streams.finops import grafana_enforcement as ge
from tokenbrake.streams.finops import rollup_sql
from tokenbrake.streams.finops.migrations import sync_budget_policies
from tokenbrake.streams.finops.outcomes import write_outcomes
from tokenbrake.streams.price import PriceBook
from tokenbrake.streams.price.rates import nanos_to_usd
from tokenbrake.streams.runtime.health import HEALTH_COLUMNS, PipelineHealth
from tokenbrake.streams.sink.clickhouse import ClickHouseWriter, SinkBatch, alert_row, control_row, usage_source

ALL = "$__all"


def expand(sql: str, frm: int, to: int, interval_s: int, variables: dict[str, list[str] | str]) -> str:
    """As the Grafana ClickHouse plugin (v4) and Grafana expand them."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)",
                 lambda m: f"{m.group(1)} >= toDateTime({frm}) AND {m.group(1)} <= toDateTime({to})", sql)
    sql = re.sub(r"\$__timeInterval\((\w+)\)",
                 lambda m: f"toStartOfInterval(toDateTime({m.group(1)}), INTERVAL {interval_s} second)", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({frm})").replace("$__toTime", f"toDateTime({to})")

    def conditional(m: re.Match) -> str:
        return "1=1" if variables[m.group(2)] == ALL else m.group(1)

    sql = re.sub(r"\$__conditionalAll\((.+?\)),\s*\$(\w+)\)", conditional, sql)
    for name, value in variables.items():
        values = value if isinstance(value, list) else [value]
        sql = sql.replace(f"${{{name}:singlequote}}", ", ".join(f"'{v}'" for v in values))
    assert "$" not in sql, sql
    return sql


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):  # noqa: ANN201
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    events = []
    for d in range(8):  # a week of history, then today: acme spends ten times its usual
        for i in range(10 if d == 0 else 1):
            for tenant in ("acme", "globex"):
                if tenant == "globex" and i:
                    continue
                events.append(UsageEvent(
                    event_id=f"{tenant}-{d}-{i}", ts=now - timedelta(days=d, seconds=i), tenant_id=tenant,
                    feature_id=("chat", "search")[i % 2], user_id="u1", provider="openai", model="gpt-4o",
                    environment="prod", input_tokens=1000, output_tokens=100, status="error" if i == 3 else "ok",
                    attempt=int(i == 4), session_id=f"s{d}"))
    priced = price(events, PriceBook())
    scope = Scope(tenant_id="acme", feature_id="chat")
    reason = Reason(rule="budget", observed=Decimal(1), threshold=Decimal(1), period="day")
    controls = [control_row(ControlEvent(control_id="c1", issued_at=now, scope=scope, action="block",
                                         reason=reason, policy_id="p"))]
    alerts = [alert_row(AlertEvent(alert_id=f"a-{state}", ts=now - timedelta(minutes=m), rule="spend_spike",
                                   scope=scope, severity="warning", state=state, summary="spike",
                                   observed=Decimal(3), threshold=Decimal(2), dedup_key=key))
              for state, m, key in (("firing", 30, "k1"), ("resolved", 10, "k1"), ("firing", 5, "k2"))]
    alerts.append(alert_row(AlertEvent(alert_id="u1", ts=now - timedelta(minutes=20), rule="unit_cost", scope=scope,
                                       severity="warning", state="firing", summary="cost per ticket",
                                       observed=Decimal("0.035"), threshold=Decimal("0.01"),
                                       dedup_key="unit_cost:chat-per-ticket", policy_id="chat-per-ticket")))
    writer = ClickHouseWriter(f"chdb://{tmp_path_factory.mktemp('grafana') / 'chdb'}", "tokenbrake")
    batch = SinkBatch([usage_source(priced, f"{int(time.time())}.000")], controls, alerts)
    health, dead = PipelineHealth("w1:1"), Counter()
    for minutes_ago, reasons in HEALTH_ROWS:  # the worker's rows, through the sink as the worker writes them
        dead.update(reasons)
        batch.add_rows("pipeline_health", HEALTH_COLUMNS,
                       [health.row(now - timedelta(minutes=minutes_ago), minutes_ago, SINK, dead)])
    writer.write(batch)
    client = writer.client
    rollup_sql.refresh_range(client, "tokenbrake", now - timedelta(days=9), now + timedelta(days=1))
    write_outcomes(client, "tokenbrake", [OutcomeEvent(outcome_id="o1", ts=now, tenant_id="acme", feature_id="chat",
                                                       kind="ticket_resolved", session_id="s0")])
    sync_budget_policies(client, "tokenbrake", parse_policies(POLICIES).budgets)
    yield client, priced, now
    writer.close()


# acme spends $0.035 today (10 calls of $0.0035) and $0.0035 a day before: over 80% of $0.04 by any month's end
POLICIES = """
budgets:
  - {id: month-each, scope: {tenant: "*"}, period: month, limit_usd: "0.04"}
  - {id: chat-day, scope: {tenant: acme, feature: chat}, period: day, limit_usd: "1.00"}
  - {id: per-user, scope: {tenant: acme, user: "*"}, period: day, limit_usd: "1.00"}
"""
#: (minutes ago, dead letters since the previous row) of the worker's pipeline_health rows
HEALTH_ROWS = [(30, {"not_json": 2}), (20, {}), (10, {"not_json": 1, "invalid_outcome": 3}), (1, {"late": 1})]
SINK = {"buffered_rows": 12, "oldest_buffered_s": 0.25, "failures": 0}
VARIABLES = {"tenant": ["acme", "globex"], "feature": ALL, "model": ALL, "environment": ALL}
SELECTED = {"tenant": ["acme"], "feature": ["chat", "search"], "model": ["gpt-4o"], "environment": ["prod"]}


@pytest.mark.parametrize("variables", [VARIABLES, SELECTED], ids=["all", "selected"])
def test_every_panel_runs_and_returns_its_columns(loaded, variables):
    client, _, now = loaded
    frm, to = int((now - timedelta(days=7, hours=1)).timestamp()), int(now.timestamp()) + 120
    dash = ge.dashboard()
    assert [v["name"] for v in dash["templating"]["list"]] == ["tenant", "feature", "model", "environment"]
    for variable in dash["templating"]["list"]:
        assert client.query(expand(variable["query"], frm, to, 3600, VARIABLES)).result_rows, variable["name"]
    for panel, (_, _, _, _, columns) in zip(dash["panels"], ge.PANELS, strict=True):
        result = client.query(expand(panel["targets"][0]["rawSql"], frm, to, 3600, variables))
        assert result.result_rows, f"panel {panel['title']!r} returned no rows"
        assert list(result.column_names) == columns, panel["title"]


def test_spend_panel_reads_exact_money_from_the_rollups(loaded):
    client, priced, now = loaded
    frm, to = int((now - timedelta(days=7, hours=1)).timestamp()), int(now.timestamp()) + 120
    sql = next(p for p in ge.dashboard()["panels"] if p["title"] == "Spend by day (rollups)")["targets"][0]["rawSql"]
    total = sum(r[1] for r in client.query(expand(sql, frm, to, 3600, SELECTED)).result_rows)
    start_day = (now - timedelta(days=7, hours=1)).date()
    assert total == sum((nanos_to_usd(p.cost_nanos) for p in priced
                         if p.event.tenant_id == "acme" and p.event.ts.date() >= start_day), Decimal(0))


def test_alert_rules_fire_on_the_seeds_headline_conditions(loaded):
    client, _, _ = loaded
    doc = yaml.safe_load(ge.RULES_PATH.read_text())
    rules = {r["uid"]: r for r in doc["groups"][0]["rules"]}
    spike = rules["tb-daily-spend-spike"]
    ratios = dict(client.query(spike["data"][0]["model"]["rawSql"]).result_rows)
    threshold = spike["data"][2]["model"]["conditions"][0]["evaluator"]
    assert threshold == {"type": "gt", "params": [2]}
    assert ratios["acme"] > 2 > ratios["globex"]  # acme spent 10x its daily average today
    budget = rules["tb-monthly-budget-80"]
    used = dict(client.query(budget["data"][0]["model"]["rawSql"]).result_rows)
    assert budget["data"][2]["model"]["conditions"][0]["evaluator"] == {"type": "gt", "params": [0.8]}
    assert used["month-each acme"] > 0.8 > used["month-each globex"] and set(used) == {"month-each acme",
                                                                                        "month-each globex"}
    worker_beat = rules["tb-worker-heartbeat"]
    assert client.query(worker_beat["data"][0]["model"]["rawSql"]).result_rows[0][0] > 0
    assert worker_beat["noDataState"] == "Alerting"
    beat = rules["tb-pipeline-heartbeat"]
    assert client.query(beat["data"][0]["model"]["rawSql"]).result_rows[0][0] > 0
    assert beat["noDataState"] == "Alerting" and beat["data"][2]["model"]["conditions"][0]["evaluator"]["type"] == "lt"


def test_the_worker_heartbeat_fires_when_health_rows_stop_not_when_they_are_turned_off(loaded):
    client, _, _ = loaded
    rule = {r["uid"]: r for r in yaml.safe_load(ge.RULES_PATH.read_text())["groups"][0]["rules"]}["tb-worker-heartbeat"]
    sql = rule["data"][0]["model"]["rawSql"]
    assert rule["data"][2]["model"]["conditions"][0]["evaluator"] == {"type": "lt", "params": [1]}  # fires on 0

    def value(database: str) -> int:
        return client.query(sql.replace(ge.HEALTH, f"{database}.pipeline_health")).result_rows[0][0]

    assert value("tokenbrake") == 1  # a row a minute ago
    for database, rows_older_than_min in (("beat_off", None), ("beat_stopped", 15)):
        client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        client.command(f"CREATE TABLE {database}.pipeline_health AS {ge.HEALTH}")
        if rows_older_than_min is not None:  # the worker stored rows, then none for 15 minutes
            client.command(f"INSERT INTO {database}.pipeline_health SELECT * FROM {ge.HEALTH} "  # noqa: S608
                           f"WHERE ts < now() - INTERVAL {rows_older_than_min} MINUTE")
    assert value("beat_off") == 1  # TOKENBRAKE_PIPELINE_HEALTH_INTERVAL_S=0: no row ever, no alert for ever
    assert value("beat_stopped") == 0


def test_pipeline_panels_read_the_workers_health_rows(loaded):
    client, _, now = loaded
    frm, to = int((now - timedelta(hours=1)).timestamp()), int(now.timestamp()) + 120
    panels = {p["title"]: p["targets"][0]["rawSql"] for p in ge.dashboard()["panels"]}
    dead = client.query(expand(panels["Dead letters by reason"], frm, to, 3600, VARIABLES)).result_rows
    totals: Counter[str] = Counter()
    for _, reason, n in dead:
        totals[reason] += n
    assert totals == Counter(not_json=3, invalid_outcome=3, late=1)  # each record once, over the rows
    lag = client.query(expand(panels["Worker lag (messages past the committed offsets)"], frm, to, 60,
                              VARIABLES)).result_rows
    assert sorted(r[2] for r in lag) == [1, 10, 20, 30] and {r[1] for r in lag} == {"w1:1"}
    buffer = client.query(expand(panels["Sink buffer (rows waiting for ClickHouse)"], frm, to, 3600,
                                 VARIABLES)).result_rows
    assert {(r[2], r[3]) for r in buffer} == {(12, 0.25)}
    unit = client.query(expand(panels["Unit-cost policies (cost per outcome or session over its limit)"], frm, to,
                               3600, SELECTED)).result_rows
    assert [(r[0], r[2], r[3], r[4]) for r in unit] == [("chat-per-ticket", "firing", Decimal("0.035"),
                                                         Decimal("0.01"))]


def test_budget_utilisation_is_exact_and_follows_the_policies_file(loaded):
    client, priced, now = loaded
    rows = {r[0] + " " + r[2] + "/" + r[3]: r[4:6] for r in client.query(ge.BUDGET_UTILISATION).result_rows}
    month_start = now.replace(day=1, hour=0, minute=0, second=0)

    def spent(keep) -> Decimal:  # noqa: ANN001
        return sum((nanos_to_usd(p.cost_nanos) for p in priced if keep(p.event)), Decimal(0))

    acme_month = spent(lambda e: e.tenant_id == "acme" and e.ts >= month_start)
    chat_today = spent(lambda e: e.tenant_id == "acme" and e.feature_id == "chat"
                       and e.ts >= now.replace(hour=0, minute=0, second=0))
    assert rows["month-each acme/"] == (Decimal("0.04"), acme_month)
    assert rows["chat-day acme/chat"] == (Decimal("1.00"), chat_today)
    assert "per-user" not in " ".join(rows)  # per-user budgets are the worker's live state
    assert sync_budget_policies(client, "tokenbrake", parse_policies(POLICIES).budgets) == 0  # unchanged
    assert sync_budget_policies(client, "tokenbrake", []) == 1  # a restart with the budgets removed from the file
    assert client.query(ge.BUDGET_UTILISATION).result_rows == []
    assert sync_budget_policies(client, "tokenbrake", parse_policies(POLICIES).budgets) == 2


def test_generated_files_are_current():
    for path, text in ge.render().items():
        assert path.read_text() == text, f"run python -m tokenbrake.streams.finops.grafana_enforcement: {path.name} is stale"
