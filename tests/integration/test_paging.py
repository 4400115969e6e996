"""Paging against real HTTP receivers on 127.0.0.1, the embedded broker and real processes:
what each receiver got (trigger and resolve, exactly), retries, Retry-After, a hanging
receiver dead-lettered, a pager killed mid-incident that neither re-pages nor forgets to
resolve, secrets nowhere, and a worker whose decisions do not wait for a hanging receiver."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.integration.conftest import ROOT, consume_all, event_json, msg, produce, run
from tests.integration.paging_helpers import PagerProc, Receivers, wait_for
from tokenbrake.schemas.codec import dumps, loads
from tokenbrake.schemas.control import ControlEvent, Scope
from tokenbrake.streams.emit.events import Emitted, alert
from tokenbrake.streams.status import fetch_status

PD_KEY = "pd-routing-key-7f3a9c"
SLACK_PATH = "/slack/T0001/B0001/slacksecretpath42"
HOOK_SECRET = "hook-secret-5e1d"  # noqa: S105 - a test secret, looked for in logs and topics
ROUTES = """\
flap_window: 2s
routes:
  - id: pd
    match: {{severity: critical}}
    pagerduty: {{routing_key_env: TB_PD_KEY, url: "{pd}"}}
  - id: flaky
    webhook: {{url_env: TB_FLAKY_URL, secret_env: TB_HOOK_SECRET}}
  - id: slack
    slack: {{webhook_url_env: TB_SLACK_URL}}
  - id: hang
    webhook: {{url_env: TB_HANG_URL, secret_env: TB_HOOK_SECRET}}
    timeout_s: 0.5
    max_attempts: 2
  - id: am
    alertmanager: {{url: "{am}"}}
"""


@pytest.fixture
def receivers():  # noqa: ANN201
    r = Receivers().start()
    yield r
    r.stop()


@pytest.fixture
def pager_env(broker, tmp_path: Path, receivers: Receivers):  # noqa: ANN201
    procs: list[PagerProc] = []
    run_id = uuid.uuid4().hex[:8]
    (tmp_path / "routes.yaml").write_text(ROUTES.format(pd=receivers.url("/pd/v2/enqueue"), am=receivers.url("/am")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENBRAKE_")}
    env.update({
        "TOKENBRAKE_KAFKA_BOOTSTRAP": broker.bootstrap, "TOKENBRAKE_HOME": str(tmp_path),
        "TOKENBRAKE_APP_ID": f"tb-{run_id}", "TOKENBRAKE_TOPIC_ALERTS": f"alerts-{run_id}",
        "TOKENBRAKE_TOPIC_INCIDENTS": f"incidents-{run_id}", "TOKENBRAKE_TOPIC_ALERTS_DLQ": f"alerts-dlq-{run_id}",
        "TOKENBRAKE_PAGING_ROUTES_PATH": str(tmp_path / "routes.yaml"), "TOKENBRAKE_LOG_LEVEL": "info",
        "TOKENBRAKE_GRAFANA_URL": "http://grafana.test:3000",
        "TB_PD_KEY": PD_KEY, "TB_SLACK_URL": receivers.url(SLACK_PATH), "TB_HOOK_SECRET": HOOK_SECRET,
        "TB_FLAKY_URL": receivers.url("/flaky/hook"), "TB_HANG_URL": receivers.url("/hang/hook"),
    })

    def make() -> PagerProc:
        proc = PagerProc(dict(env), tmp_path)
        procs.append(proc)
        return proc

    yield make
    for proc in procs:
        proc.stop()


def alert_message(state: str, severity: str, at_ms: int, tenant: str = "acme") -> tuple[bytes, bytes]:
    """An AlertEvent exactly as the worker publishes it (streams.emit.events.alert)."""
    out = Emitted()
    scope = Scope(tenant_id=tenant, feature_id="chat")
    alert(out, rule="budget", scope=scope, severity=severity, state=state, summary=f"acme/chat budget {state}",
          observed=Decimal("52.5"), threshold=Decimal("50"), dedup_key=f"budget:acme-daily:{scope.key()}:day:x",
          at_ms=at_ms, policy_id="acme-daily")
    event = out.alerts[0]
    return event.dedup_key.encode(), dumps(event)


def signed_ok(request: dict[str, Any]) -> bool:
    ts, sig = request["headers"]["X-Tokenbrake-Timestamp"], request["headers"]["X-Tokenbrake-Signature"]
    expected = "v1=" + hmac.new(HOOK_SECRET.encode(), ts.encode() + b"." + request["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, sig)


def test_every_receiver_gets_one_trigger_and_one_resolve_across_a_pager_crash(pager_env, receivers, broker):
    pager = pager_env().start()
    topic = pager.env["TOKENBRAKE_TOPIC_ALERTS"]
    now = int(time.time() * 1000)
    firing = alert_message("firing", "critical", now)
    # the worker's alert, the same alert redelivered, and a repeat evaluation of the same incident
    run(produce(broker.bootstrap, topic, [firing, firing, alert_message("firing", "critical", now + 1000)]))

    def delivered() -> bool:
        routes = pager.status()["routes"]
        return (len(receivers.of("pd")) == 1 and len(receivers.of("flaky")) == 3 and len(receivers.of("slack")) == 2
                and len(receivers.of("am")) >= 1 and routes["hang"].get("dead_lettered") == 1)

    def recorded() -> bool:  # counted once the pager wrote the outcome to its incidents topic: a crash
        routes = pager.status()["routes"]  # between a receiver's 2xx and that write sends it again (pager docstring)
        return (routes["pd"]["delivered"], routes["flaky"]["delivered"], routes["slack"]["delivered"]) == (1, 1, 1)

    wait_for(lambda: delivered() and recorded(), 60, "the first deliveries, written down", pager.log_tail)
    before_crash = {k: len(receivers.of(k)) for k in ("pd", "flaky", "slack", "hang")}

    pager.kill()  # mid-incident: open, delivered, nothing resolved yet
    pager = pager_env().start()
    ticks = pager.status()["stats"].get("ticks", 0)
    wait_for(lambda: pager.status()["alerts_position"] == 3 and pager.status()["stats"].get("ticks", 0) >= ticks + 3,
             30, "the restarted pager to catch up", pager.log_tail)
    assert {k: len(receivers.of(k)) for k in before_crash} == before_crash  # nobody paged again
    listed = pager.status()["incidents"]
    assert [(i["rule"], i["state"], i["delivered_to"], i["dead_lettered"]) for i in listed] == \
        [("budget", "open", ["am", "flaky", "pd", "slack"], ["hang"])]
    assert "hang: timeout after 0.5s" in listed[0]["last_error"]

    listed_by_cli = subprocess.run([sys.executable, "-m", "tokenbrake.streams", "alerts", "list", "--json"], env=pager.env,
                                   cwd=ROOT, capture_output=True, timeout=60, check=True)
    assert loads(listed_by_cli.stdout) == listed  # read from the incidents topic, as the pager sees them

    run(produce(broker.bootstrap, topic, [alert_message("resolved", "info", now + 2000)]))
    wait_for(lambda: len(receivers.of("pd")) == 2 and len(receivers.of("flaky")) == 4
             and len(receivers.of("slack")) == 3
             and any("endsAt" in r["json"][0] for r in receivers.of("am")), 30, "the resolves", pager.log_tail)

    # PagerDuty: exactly one trigger and one resolve, one dedup_key, the routing key from the environment
    pd = [r["json"] for r in receivers.of("pd")]
    assert [(p["event_action"], p["routing_key"]) for p in pd] == [("trigger", PD_KEY), ("resolve", PD_KEY)]
    assert pd[0]["dedup_key"] == pd[1]["dedup_key"]
    assert pd[0]["payload"]["severity"] == "critical" and pd[0]["payload"]["custom_details"]["observed"] == "52.5"
    assert pd[0]["links"][0]["href"] == "http://grafana.test:3000/d/tokenbrake-spend?var-tenant=acme"
    # the webhook that failed twice: three attempts of one signed delivery, then one resolve
    flaky = receivers.of("flaky")
    assert [(r["json"]["state"], r["status"]) for r in flaky] == [("firing", 500), ("firing", 500), ("firing", 200),
                                                                   ("resolved", 200)]
    assert len({r["headers"]["X-Tokenbrake-Delivery"] for r in flaky[:3]}) == 1 and all(map(signed_ok, flaky))
    assert flaky[0]["json"]["incident"] == flaky[3]["json"]["incident"] == pd[0]["dedup_key"]
    # Slack: 429 then the same message after Retry-After (1 s), then a resolve naming the incident
    slack = receivers.of("slack")
    assert [r["status"] for r in slack] == [429, 200, 200]
    assert slack[0]["body"] == slack[1]["body"] and slack[1]["t"] - slack[0]["t"] >= 0.95
    assert slack[2]["json"]["text"].startswith("Resolved: ") and pd[0]["dedup_key"] in slack[2]["json"]["text"]
    # Alertmanager: the same labels firing and resolved; endsAt only on the resolve
    am = [r["json"][0] for r in receivers.of("am")]
    assert all(a["labels"] == am[0]["labels"] for a in am) and "endsAt" not in am[0] and "endsAt" in am[-1]
    # the hanging receiver: two attempts timed out, dead-lettered with route and error, never resolved
    assert len(receivers.of("hang")) == 2
    dlq = run(consume_all(broker.bootstrap, pager.env["TOKENBRAKE_TOPIC_ALERTS_DLQ"], expect=1))
    assert len(dlq) == 1
    headers = {k: v.decode() for k, v in dlq[0].headers}
    assert headers["tokenbrake-route"] == "hang" and headers["tokenbrake-error"] == "timeout after 0.5s"
    record = loads(dlq[0].value)
    assert (record["route"], record["action"], record["attempts"], record["incident"]) == \
        ("hang", "trigger", 2, pd[0]["dedup_key"])
    wait_for(lambda: pager.status()["incidents"] == [], 10, "the incident to leave the open list")
    hang = pager.status()["routes"]["hang"]
    assert (hang["dead_lettered"], hang["dead_lettered_kept"]) == (0, 1)  # this process's count, and the kept state

    # secrets: in no log line, no topic record, no error
    incidents = run(consume_all(broker.bootstrap, pager.env["TOKENBRAKE_TOPIC_INCIDENTS"], expect=1))
    alerts = run(consume_all(broker.bootstrap, topic, expect=4))
    written = b"".join((r.value or b"") + b"".join(v for _, v in r.headers) for r in [*incidents, *dlq, *alerts])
    written += (pager.home / "pager.log").read_bytes()
    for secret in (PD_KEY, "slacksecretpath42", HOOK_SECRET):
        assert secret.encode() not in written


def test_alerts_test_sends_a_trigger_and_a_resolve_through_one_route_and_prints_the_answers(pager_env, receivers):
    env = pager_env().env

    def alerts_test(route: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tokenbrake.streams", "alerts", "test", "--route", route], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    pd = alerts_test("pd")
    assert pd.returncode == 0, pd.stderr
    answer = '{"status":"success","message":"Event processed"}'
    assert pd.stdout.splitlines() == [f"trigger: HTTP 202 after 1 attempt(s): {answer}",
                                      f"resolve: HTTP 202 after 1 attempt(s): {answer}"]
    sent = [r["json"] for r in receivers.of("pd")]
    assert [p["event_action"] for p in sent] == ["trigger", "resolve"] and sent[0]["dedup_key"] == sent[1]["dedup_key"]
    assert sent[0]["payload"]["summary"].startswith("[test] ")
    flaky = alerts_test("flaky")
    assert flaky.stdout.splitlines() == ["trigger: HTTP 200 after 3 attempt(s): thanks",
                                         "resolve: HTTP 200 after 1 attempt(s): thanks"]
    hang = alerts_test("hang")
    assert hang.returncode == 1
    assert hang.stdout.splitlines() == [f"{action}: no answer after 2 attempt(s): timeout after 0.5s"
                                        for action in ("trigger", "resolve")]
    unknown = alerts_test("nope")
    assert (unknown.returncode, unknown.stdout) == (2, "")
    assert unknown.stderr == "no route 'nope' in the routes file (routes: pd, flaky, slack, hang, am)\n"


def test_a_backlog_pages_only_for_what_is_still_open_at_its_end(pager_env, receivers, broker):
    pager = pager_env()
    topic = pager.env["TOKENBRAKE_TOPIC_ALERTS"]
    now = int(time.time() * 1000)
    backlog = []  # more than one fetch: 400 incidents that fired and resolved while no pager ran
    for i in range(400):
        backlog += [alert_message("firing", "critical", now - 600_000 + i, f"gone-{i}"),
                    alert_message("resolved", "info", now - 300_000 + i, f"gone-{i}")]
    backlog.append(alert_message("firing", "critical", now - 60_000, "still-open"))
    run(produce(broker.bootstrap, topic, backlog))
    pager.start()
    wait_for(lambda: len(receivers.of("pd")) >= 1, 60, "the page for the open incident",
             lambda: str({k: v for k, v in pager.status().items() if k != "incidents"}))
    still_open = ["tenant=still-open/feature=chat/user=*/model=*"]
    wait_for(lambda: [i["scope"] for i in pager.status()["incidents"]] == still_open, 30, "the resolved ones to close",
             pager.log_tail)
    assert pager.status()["stats"]["ticks_catching_up"] >= 1  # it did read the backlog in more than one batch
    assert [(r["json"]["event_action"], r["json"]["payload"]["component"]) for r in receivers.of("pd")] == \
        [("trigger", "still-open")]


HANG_ROUTES = """\
routes:
  - id: hang
    match: {tenant: slow}
    webhook: {url_env: TB_HANG_URL, secret_env: TB_HOOK_SECRET}
    timeout_s: 60
"""
POLICIES = """
budgets:
  - id: day
    scope: {tenant: "*"}
    period: day
    limit_usd: "0.007"          # two gpt-4o calls of 1000 in / 100 out
    warn_at: []
    action: {action: block}
"""


async def control_latency(bootstrap: str, usage: str, control: str, tenant: str) -> float:
    """Seconds from sending the event that crosses ``tenant``'s budget to its block on the control topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest")
    await consumer.start()
    try:
        tp = TopicPartition(control, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        await produce(bootstrap, usage, [msg([event_json(tenant_id=tenant), event_json(tenant_id=tenant)], tenant)])
        sent = time.monotonic()
        while True:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for rec in records:
                    c = ControlEvent.model_validate(loads(rec.value))
                    if c.scope.tenant_id == tenant and c.action == "block":
                        return time.monotonic() - sent
            assert time.monotonic() - sent < 30, f"no block for {tenant}"
    finally:
        await consumer.stop()


def test_decisions_do_not_wait_for_a_hanging_receiver(worker_env, receivers, broker, tmp_path):
    from tokenbrake.streams.broker import free_port

    worker = worker_env(POLICIES)
    (tmp_path / "routes.yaml").write_text(HANG_ROUTES)
    worker.env.update({"TOKENBRAKE_PAGING_ROUTES_PATH": str(tmp_path / "routes.yaml"), "TB_HOOK_SECRET": HOOK_SECRET,
                       "TB_HANG_URL": receivers.url("/hang/hook"), "TOKENBRAKE_PAGER_WEB_PORT": str(free_port())})
    worker.start()  # `tokenbrake run` starts the pager process itself
    args = (broker.bootstrap, worker.topic_usage, worker.topic_control)
    before = [run(control_latency(*args, f"calm-{i}")) for i in range(3)]  # no route matches: nothing to deliver
    assert receivers.of("hang") == []
    run(control_latency(*args, "slow"))  # its alert goes to the hanging receiver
    wait_for(lambda: receivers.hanging >= 1, 60, "the pager to be stuck on the hanging receiver", worker.log_tail)
    during = []
    for i in range(3):
        during.append(run(control_latency(*args, f"while-hanging-{i}")))
        assert receivers.hanging >= 1  # still hanging when the block was published
    assert max(during) <= max(3 * max(before), max(before) + 2.0), (before, during)
    hung = receivers.of("hang")
    assert len(hung) == 1 and hung[0]["json"]["state"] == "firing" and hung[0]["json"]["scope"]["tenant_id"] == "slow"
    assert HOOK_SECRET.encode() not in (worker.home / "worker.log").read_bytes()

    # a pager that dies is started again by the worker
    pager_url = f"http://127.0.0.1:{worker.env['TOKENBRAKE_PAGER_WEB_PORT']}/tokenbrake/pager"
    first = fetch_status(pager_url)["pid"]
    os.kill(first, signal.SIGKILL)

    def restarted() -> bool:
        try:
            return fetch_status(pager_url)["pid"] != first
        except OSError:
            return False

    wait_for(restarted, 30, "the worker to restart its pager", worker.log_tail)
