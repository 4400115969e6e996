"""The spine against the real embedded broker and chdb: plain producer in, signed controls
and DLQ out, exact rows in ClickHouse, exact totals after a restart, and a backtest that
decides exactly what the live worker decided."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

from tests.integration.conftest import ROOT, consume_all, event_json, msg, produce, run
from tokenbrake.schemas.codec import dumps, loads
from tokenbrake.schemas.control import ControlEvent
from tokenbrake.schemas.signing import parse_keyring, verify
from tokenbrake.schemas.usage import UsageEvent
from tokenbrake.streams.backtest import run as backtest
from tokenbrake.streams.decide.policies import parse_policies
from tokenbrake.streams.engine import Engine
from tokenbrake.streams.price import PriceBook
from tokenbrake.streams.sink.clickhouse import connect

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


def _chdb(home: Path):  # noqa: ANN202
    return connect(f"chdb://{home / 'chdb'}")


def test_end_to_end(worker_env, broker):
    worker = worker_env(POLICIES).start()
    # Faust's local data lives in TOKENBRAKE_HOME, not as "<app id>-data" in the working directory
    assert (worker.home / "faust").is_dir() and not (ROOT / f"{worker.app_id}-data").exists()
    acme = [event_json(ts=event_json()["ts"] + i) for i in range(25)]
    globex = [event_json(tenant_id="globex", model="gpt-4o-mini") for _ in range(5)]
    messages = [msg(e) for e in acme] + [msg(globex, "globex")]
    messages += [msg(acme[0]), (b"acme", b"{not json"), msg([event_json(), {"event_id": "broken"}])]
    run(produce(broker.bootstrap, worker.topic_usage, messages))

    status = worker.wait_counted(31)  # 25 + 5 + the good element of the mixed array
    assert status["counts"]["duplicate"] == 1
    acme_today = next(r for r in status["spend"] if r["scope"] == "t=acme")
    assert Decimal(acme_today["today_usd"]) == Decimal("0.0035") * 26

    # control topic: downgrade then block, signed, keyed by scope
    records = run(consume_all(broker.bootstrap, worker.topic_control, expect=2))
    controls = [ControlEvent.model_validate(loads(r.value)) for r in records]
    assert [(c.action, c.downgrade_to) for c in controls] == [("downgrade", "gpt-4o-mini"), ("block", None)]
    assert all(verify(c, parse_keyring("k1:test-secret-of-16-chars")) for c in controls)
    assert records[0].key == b"tenant=acme/feature=*/user=*/model=*"

    # dead letters keep their reason and bytes
    dlq = run(consume_all(broker.bootstrap, worker.topic_dlq, expect=2))
    reasons = sorted(dict(r.headers)["tokenbrake-reason"].decode() for r in dlq)
    assert reasons == ["invalid_event", "not_json"]
    assert any(r.value == b"{not json" for r in dlq)
    alerts = run(consume_all(broker.bootstrap, worker.topic_alerts, expect=3))
    assert len(alerts) == 3

    worker.wait_flushed(31)
    worker.stop()
    client = _chdb(worker.home)
    rows = client.query("SELECT tenant_id, count(), sum(cost_usd) FROM tokenbrake.usage_events FINAL "
                        "GROUP BY tenant_id ORDER BY tenant_id").result_rows
    assert rows[0] == ("acme", 26, Decimal("0.0910"))
    assert rows[1][:2] == ("globex", 5)
    for dimension in ("tenant", "feature", "model"):
        minute = client.query("SELECT sum(requests), sum(cost_usd) FROM tokenbrake.spend_minute FINAL "
                              "WHERE dimension = %(d)s", parameters={"d": dimension}).result_rows
        assert minute[0] == (31, rows[0][2] + rows[1][2])
    users = client.query("SELECT sum(requests), sum(cost_usd) FROM tokenbrake.spend_user_day FINAL").result_rows
    assert users[0] == (31, rows[0][2] + rows[1][2])
    assert client.query("SELECT count() FROM tokenbrake.control_events FINAL").result_rows[0][0] == 2
    assert client.query("SELECT count() FROM tokenbrake.alerts FINAL").result_rows[0][0] == 3
    client.close()

    # the backtest, on the same events, makes the same decisions
    events = [UsageEvent.model_validate(e) for e in acme + globex + [loads(messages[-1][1])[0]]]
    engine = Engine(parse_policies(POLICIES), PriceBook())
    offline = list(backtest(engine, sorted(events, key=lambda e: e.ts)))
    assert [(d["action"], d["scope"]["tenant_id"]) for d in offline if d["kind"] == "control"] == \
        [(c.action, c.scope.tenant_id) for c in controls]
    live_alerts = [loads(r.value) for r in alerts]
    assert [(d["rule"], d["severity"], d["dedup_key"]) for d in offline if d["kind"] == "alert"] == \
        [(a["rule"], a["severity"], a["dedup_key"]) for a in live_alerts]


def test_restart_resumes_exact_totals_without_refiring(worker_env, broker):
    worker = worker_env(POLICIES).start()
    first = [event_json() for _ in range(15)]
    run(produce(broker.bootstrap, worker.topic_usage, [msg(e) for e in first]))
    worker.wait_counted(15)
    worker.wait_flushed(15)
    worker.stop()

    worker.start()  # same app id, topics and chdb: state comes back from the changelogs
    status = worker.status()
    assert next(r for r in status["spend"] if r["scope"] == "t=acme")["today_requests"] == 15
    assert [c["action"] for c in status["controls"]] == ["downgrade"]
    again = [event_json() for _ in range(3)]
    run(produce(broker.bootstrap, worker.topic_usage, [msg(e) for e in first[:5] + again]))
    status = worker.wait_counted(3)
    assert status["counts"]["duplicate"] == 5
    assert next(r for r in status["spend"] if r["scope"] == "t=acme")["today_requests"] == 18
    worker.wait_flushed(3)
    worker.stop()
    controls = run(consume_all(broker.bootstrap, worker.topic_control, expect=1))
    assert [loads(r.value)["action"] for r in controls] == ["downgrade"]  # not re-issued after the restart
    client = _chdb(worker.home)
    assert client.query("SELECT count() FROM tokenbrake.usage_events FINAL").result_rows[0][0] == 18
    client.close()


def test_clickhouse_outage_keeps_enforcing_and_loses_nothing(worker_env, broker):
    worker = worker_env(POLICIES, clickhouse_dsn="http://127.0.0.1:9", sink_retry_max_s="1").start()
    events = [event_json() for _ in range(12)]
    run(produce(broker.bootstrap, worker.topic_usage, [msg(e) for e in events]))
    status = worker.wait_counted(12)
    assert [c["action"] for c in status["controls"]] == ["downgrade"]  # enforcement did not wait
    controls = run(consume_all(broker.bootstrap, worker.topic_control, expect=1))
    assert len(controls) == 1
    deadline = time.monotonic() + 30
    while (sink := worker.status()["worker"]["sink"])["failures"] < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sink["failures"] >= 1 and sink["rows_written"] == 0 and sink["last_error"]
    assert sink["buffered_rows"] >= 12
    worker.stop()

    # ClickHouse is back: the uncommitted messages are redelivered, written, and not counted twice
    del worker.env["TOKENBRAKE_CLICKHOUSE_DSN"]
    worker.start()
    status = worker.wait_counted(12, key="redelivery")  # all 12 were in the changelog: none counted again
    assert next(r for r in status["spend"] if r["scope"] == "t=acme")["today_requests"] == 12
    worker.wait_flushed(12)
    worker.stop()
    client = _chdb(worker.home)
    assert client.query("SELECT count(), sum(cost_usd) FROM tokenbrake.usage_events FINAL").result_rows[0] == \
        (12, Decimal("0.042"))
    assert client.query("SELECT sum(requests) FROM tokenbrake.spend_minute FINAL "
                        "WHERE dimension = 'tenant'").result_rows[0][0] == 12
    client.close()


def test_chunks_ended_by_the_tick_mid_batch_lose_and_hold_nothing(worker_env, broker):
    """Chunks end on age and on the tick while big batches are being decided: every event is
    stored once and acknowledged (a restart reads nothing again)."""
    worker = worker_env("", tick_interval_s="0.02", chunk_max_s="0.01", chunk_events="1000000").start()
    base = event_json()["ts"]
    events = [event_json(ts=base + i % 1000, user_id=f"u{i % 997}") for i in range(20_000)]
    messages = [msg(events[i:i + 100]) for i in range(0, len(events), 100)]
    run(produce(broker.bootstrap, worker.topic_usage, messages))
    worker.wait_counted(20_000, timeout_s=60)
    worker.wait_flushed(20_000, timeout_s=60)
    assert worker.status()["worker"]["sink"]["usage_rows_written"] == 20_000
    worker.stop()
    worker.start()
    time.sleep(3)  # anything unacknowledged would be redelivered now
    status = worker.status()
    assert status["counts"].get("redelivery", 0) == 0 and status["counts"].get("new", 0) == 0
    worker.stop()
    client = _chdb(worker.home)
    assert client.query("SELECT count() FROM tokenbrake.usage_events FINAL").result_rows[0][0] == 20_000
    client.close()


def test_detector_baselines_come_back_after_a_restart(worker_env, broker):
    worker = worker_env("").start()
    now = int(time.time() * 1000)
    start = now - 25 * 60_000
    events = [event_json(ts=start + i * 2_000, user_id=f"u{i % 7}") for i in range(700)]  # 30 a minute
    run(produce(broker.bootstrap, worker.topic_usage, [msg(events[i:i + 50]) for i in range(0, 700, 50)]))
    worker.wait_counted(700)
    worker.wait_flushed(700)
    learned = worker.status()["detector_models"]
    assert learned > 0  # closed minute buckets were judged
    worker.stop()  # a graceful stop writes the baselines
    worker.start()
    assert 0 < worker.status()["detector_models"] <= learned  # read back; no event was processed again
    assert worker.status()["counts"].get("new", 0) == 0


def test_events_on_another_partition_than_their_tenants_are_forwarded_and_counted_once(worker_env, broker):
    """A producer that does not partition by tenant (kcat, librdkafka clients, a shared key):
    the worker sends the events on to their tenant's partition and counts them there, once."""
    from aiokafka import AIOKafkaProducer

    from tokenbrake.streams.runtime.routing import TenantRouter

    worker = worker_env(POLICIES).start()
    right = TenantRouter(2).partition("globex")
    mixed = [event_json(tenant_id="globex", model="gpt-4o-mini") for _ in range(4)] + [event_json()]

    async def send_to_wrong_partition() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        try:  # one array holding two tenants, on globex's wrong partition, then a duplicate of it
            for _ in range(2):
                await producer.send_and_wait(worker.topic_usage, dumps(mixed), key=b"shared", partition=1 - right)
        finally:
            await producer.stop()

    run(send_to_wrong_partition())
    status = worker.wait_counted(5)
    assert status["counts"]["new"] == 5 and status["counts"]["duplicate"] == 5
    assert status["worker"]["forwarded"] >= 4  # globex's events (acme's too if 1 - right is not acme's)
    globex = next(r for r in status["spend"] if r["scope"] == "t=globex")
    assert globex["today_requests"] == 4
    worker.wait_flushed(5)
    records = run(consume_all(broker.bootstrap, worker.topic_usage, expect=3))
    forwarded = [r for r in records if r.key == b"globex"]
    assert forwarded and all(r.partition == right for r in forwarded)
    worker.stop()
    worker.start()
    time.sleep(2)  # the original messages were acknowledged after forwarding: nothing comes back
    assert worker.status()["counts"].get("new", 0) == 0


def test_a_usage_topic_with_another_partition_count_is_refused_at_start_up(worker_env, broker):
    import subprocess
    import sys

    from tokenbrake.streams.broker import ensure_topics, free_port

    worker = worker_env("", web_port=str(free_port()))
    run(ensure_topics(broker.bootstrap, {worker.topic_usage: 3}))  # the worker is configured for 2
    done = subprocess.run([sys.executable, "-m", "tokenbrake.streams", "run"], env=worker.env, cwd=ROOT,
                          capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"has 3 partitions but TOKENBRAKE_TOPIC_PARTITIONS is 2" in done.stderr
