"""GET /metrics on a running worker, parsed with prometheus_client's own parser: every
counter moves by exactly what a known input implies."""

from __future__ import annotations

import re
import time
import urllib.request
from decimal import Decimal
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import ROOT, consume_all, event_json, msg, produce, run
from tokenbrake.schemas.codec import loads
from tokenbrake.streams.settings import Settings

POLICIES = """
budgets:
  - id: acme-day
    scope: {tenant: acme}
    period: day
    limit_usd: "0.035"
    warn_at: [0.8]
    on_exceed:
      - {at: 1.0, action: downgrade, to_model: gpt-4o-mini}
      - {at: 2.0, action: block}
"""
CALL_USD = Decimal("0.0035")  # gpt-4o, 1000 in + 100 out


def scrape(worker: Any) -> dict[tuple[str, frozenset], float]:
    url = worker.url.replace("/tokenbrake/status", "/metrics")
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - the test's own worker
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith(("tokenbrake_", "process_")), family.name
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for(worker: Any, check: Any, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    samples: dict = {}
    while time.monotonic() < deadline:
        samples = scrape(worker)
        if check(samples):
            return samples
        time.sleep(0.2)
    raise AssertionError(f"metrics never reached the expected state: {sorted(samples.items())[:80]}")


def test_metrics_move_by_the_known_input(worker_env, broker):
    worker = worker_env(POLICIES, METRICS_TENANT_LABEL="true", METRICS_MAX_TENANTS="1").start()
    before = scrape(worker)
    assert value(before, "tokenbrake_events_total", outcome="counted") == 0
    assert value(before, "tokenbrake_controls_active", action="block") == 0

    base = event_json()["ts"]
    acme = [event_json(ts=base + i) for i in range(25)]
    run(produce(broker.bootstrap, worker.topic_usage, [msg(e) for e in acme] + [msg(acme[0]), (b"acme", b"{x")]))
    worker.wait_counted(25)
    globex = [event_json(tenant_id="globex", ts=base) for _ in range(5)]  # after acme: beyond the tenant cap
    run(produce(broker.bootstrap, worker.topic_usage, [msg(e, "globex") for e in globex]))
    worker.wait_counted(30)
    worker.wait_flushed(30)

    after = wait_for(worker, lambda s: value(s, "tokenbrake_sink_buffered_rows") == 0
                     and value(s, "tokenbrake_sink_rows_written_total") >= 30)
    assert value(after, "tokenbrake_events_total", outcome="counted") == 30
    assert value(after, "tokenbrake_events_total", outcome="duplicate") == 1
    assert value(after, "tokenbrake_dead_letters_total", reason="not_json") == 1
    assert value(after, "tokenbrake_messages_total") == 32
    spend = {dict(k[1])["tenant"]: Decimal(str(v)) for k, v in after.items() if k[0] == "tokenbrake_spend_usd_total"}
    assert spend == {"acme": 25 * CALL_USD, "other": 5 * CALL_USD}
    assert value(after, "tokenbrake_tokens_total", type="input") == 30 * 1000
    assert value(after, "tokenbrake_tokens_total", type="output") == 30 * 100
    assert value(after, "tokenbrake_tokens_total", type="reasoning") == 0

    controls = run(consume_all(broker.bootstrap, worker.topic_control, expect=2))
    assert [loads(r.value)["action"] for r in controls] == ["downgrade", "block"]
    assert value(after, "tokenbrake_controls_issued_total", action="downgrade") == 1
    assert value(after, "tokenbrake_controls_issued_total", action="block") == 1
    assert value(after, "tokenbrake_controls_active", action="block") == 1
    assert value(after, "tokenbrake_decision_latency_seconds_count") == 2
    assert 0 < value(after, "tokenbrake_decision_latency_seconds_sum") < 60

    alerts = run(consume_all(broker.bootstrap, worker.topic_alerts, expect=3))
    by_rule: dict[tuple[str, str], int] = {}
    for record in alerts:
        alert = loads(record.value)
        by_rule[(alert["rule"], alert["state"])] = by_rule.get((alert["rule"], alert["state"]), 0) + 1
    assert {k: v for k, v in after.items() if k[0] == "tokenbrake_alerts_total"} == {
        ("tokenbrake_alerts_total", frozenset({"rule": r, "state": s}.items())): n for (r, s), n in by_rule.items()}

    assert value(after, "tokenbrake_last_event_timestamp_seconds") == max(e["ts"] for e in acme) / 1000
    assert value(after, "tokenbrake_changelog_records_total", table="aggregates") > 0
    assert value(after, "tokenbrake_sink_failures_total") == 0
    lag = {dict(k[1])["partition"]: v for k, v in after.items()
           if k[0] == "tokenbrake_consumer_lag_messages" and dict(k[1])["topic"] == worker.topic_usage}
    assert sorted(lag) == ["0", "1"] and all(v >= 0 for v in lag.values())
    assert not any("user" in dict(labels) for _, labels in after)  # never a user id in a label


def readme_yaml(section: str) -> list[Any]:
    text = (ROOT / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", body, re.S)]


def test_readme_alert_rules_use_metrics_the_worker_exposes(worker_env):
    scrape_config, rules = readme_yaml("Prometheus metrics")
    assert scrape_config["scrape_configs"][0]["static_configs"][0]["targets"][0].endswith(":6066")
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) == 2
    worker = worker_env().start()
    exposed = {name for name, _ in scrape(worker)}
    for expr in exprs:
        for name in re.findall(r"tokenbrake_\w+", expr):
            assert name in exposed, name


def test_readme_collector_pipeline_matches_the_defaults():
    [collector] = readme_yaml("OpenTelemetry input: no code in services")
    exporter = collector["exporters"]["kafka/tokenbrake"]["traces"]
    assert exporter == {"topic": Settings().topic_otlp, "encoding": "otlp_proto"}
    assert collector["service"]["pipelines"]["traces/tokenbrake"]["exporters"] == ["kafka/tokenbrake"]
