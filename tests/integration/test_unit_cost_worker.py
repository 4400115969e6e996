"""The worker reads the outcomes topic for its unit-cost policies (streams.outcome_flow), on the
embedded broker and chdb: cost per outcome fires and resolves exactly, a redelivered outcome
is counted once (also after a restart), invalid outcomes are dead-lettered with reason and
bytes, misrouted ones are forwarded, and the outcome rows reach ClickHouse."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaProducer

from tests.integration.conftest import consume_all, event_json, msg, produce, recent_ms, run
from tokenbrake.schemas.codec import dumps, loads
from tokenbrake.streams.runtime.routing import TenantRouter
from tokenbrake.streams.sink.clickhouse import connect

POLICIES = """
unit_costs:
  - id: chat-per-ticket
    scope: {tenant: "*", feature: chat}
    per: ticket_resolved
    max_usd: "0.01"
    action: {action: downgrade, to_model: gpt-4o-mini}
"""


def outcome(oid: str, **kw: Any) -> dict[str, Any]:
    return {"outcome_id": oid, "ts": recent_ms(), "tenant_id": "acme", "feature_id": "chat",
            "kind": "ticket_resolved", **kw}


def wait_records(bootstrap: str, topic: str, done, timeout_s: float = 45.0) -> list[Any]:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    records: list[Any] = []
    while time.monotonic() < deadline:
        records = run(consume_all(bootstrap, topic, timeout_s=1.0))
        if done(records):
            return records
    raise AssertionError(f"{topic}: {[loads(r.value) for r in records]}")


async def send_to_partition(bootstrap: str, topic: str, value: bytes, key: bytes, partition: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


def test_cost_per_outcome_from_the_outcomes_topic(worker_env, broker):
    topic = f"outcomes-{uuid.uuid4().hex[:8]}"
    worker = worker_env(POLICIES, topic_outcomes=topic).start()
    run(produce(broker.bootstrap, worker.topic_usage, [msg([event_json() for _ in range(10)])]))  # $0.035
    worker.wait_counted(10)
    o1 = dumps(outcome("o1", session_id="s1"))
    run(produce(broker.bootstrap, topic, [(b"acme", o1), (b"acme", o1), (b"acme", b"{not json"),
                                          (b"acme", dumps({"outcome_id": "no-ts", "tenant_id": "acme"}))]))
    worker.wait_counted(1, key="outcome_new")

    def alerts_in(records: list[Any]) -> list[dict]:
        return [a for a in map(loads, (r.value for r in records)) if a["rule"] == "unit_cost"]

    fired = alerts_in(wait_records(broker.bootstrap, worker.topic_alerts, lambda r: alerts_in(r)))
    assert [(a["state"], a["severity"], Decimal(a["observed"])) for a in fired] == [
        ("firing", "critical", Decimal("0.035"))]  # $0.035 over one outcome, the redelivery not counted
    controls = wait_records(broker.bootstrap, worker.topic_control, lambda r: len(r) >= 1)
    assert [(c["action"], c["downgrade_to"], c["reason"]["rule"]) for c in map(loads, (r.value for r in controls))] \
        == [("downgrade", "gpt-4o-mini", "unit_cost")]
    dlq = wait_records(broker.bootstrap, worker.topic_dlq, lambda r: len(r) >= 2)
    assert sorted((dict(r.headers)["tokenbrake-reason"], r.value) for r in dlq) == [
        (b"invalid_outcome", dumps({"outcome_id": "no-ts", "tenant_id": "acme"})), (b"not_json", b"{not json")]

    # three more tickets, one of them on the other partition (forwarded to its tenant's): $0.035 / 4
    acme = TenantRouter(2).partition("acme")
    run(produce(broker.bootstrap, topic, [(b"acme", dumps(outcome(o))) for o in ("o2", "o3")]))
    run(send_to_partition(broker.bootstrap, topic, dumps(outcome("o4")), b"acme", 1 - acme))
    status = worker.wait_counted(4, key="outcome_new")
    assert status["counts"]["outcome_duplicate"] == 1
    states = alerts_in(wait_records(broker.bootstrap, worker.topic_alerts, lambda r: len(alerts_in(r)) >= 2))
    assert [(a["state"], Decimal(a["observed"])) for a in states] == [("firing", Decimal("0.035")),
                                                                       ("resolved", Decimal("0.00875"))]
    controls = wait_records(broker.bootstrap, worker.topic_control, lambda r: len(r) >= 2)
    assert [loads(r.value)["action"] for r in controls] == ["downgrade", "allow"]
    worker.wait_flushed(10 + 4)
    worker.stop()

    worker.start()  # the counted outcomes come back from the changelog: o1 again changes nothing
    run(produce(broker.bootstrap, topic, [(b"acme", o1)]))
    worker.wait_counted(1, key="outcome_duplicate")
    run(produce(broker.bootstrap, worker.topic_usage, [msg(event_json())]))  # $0.0385 / 4: still under
    worker.wait_counted(1)
    worker.wait_flushed(1)
    worker.stop()
    assert len(alerts_in(run(consume_all(broker.bootstrap, worker.topic_alerts)))) == 2
    client = connect(f"chdb://{worker.home / 'chdb'}")
    rows = client.query("SELECT outcome_id, kind, session_id FROM tokenbrake.outcomes FINAL ORDER BY outcome_id")
    assert rows.result_rows == [("o1", "ticket_resolved", "s1"), ("o2", "ticket_resolved", None),
                                ("o3", "ticket_resolved", None), ("o4", "ticket_resolved", None)]
    client.close()


def test_an_outcomes_topic_with_another_partition_count_is_refused_at_start_up(worker_env, broker):
    import subprocess
    import sys

    from tests.integration.conftest import ROOT
    from tokenbrake.streams.broker import ensure_topics, free_port

    topic = f"outcomes-{uuid.uuid4().hex[:8]}"
    worker = worker_env(POLICIES, topic_outcomes=topic, web_port=str(free_port()))
    run(ensure_topics(broker.bootstrap, {topic: 1}))  # the usage topic has 2: outcomes would miss their tenant's worker
    done = subprocess.run([sys.executable, "-m", "tokenbrake.streams", "run"], env=worker.env, cwd=ROOT,
                          capture_output=True, timeout=60)
    assert done.returncode == 2
    assert f"{topic} has 1 partitions but TOKENBRAKE_TOPIC_PARTITIONS is 2".encode() in done.stderr
