"""Outcomes end to end on the embedded broker: UsageReporter.record_outcome -> the outcomes
topic -> `tokenbrake outcomes sink` -> ClickHouse; an invalid message is skipped with one
line, committed offsets mean a second run stores nothing again."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

from aiokafka import AIOKafkaProducer

from tokenbrake.clients.reporter import UsageReporter, hash_user
from tokenbrake.streams.broker import ensure_topics
from tokenbrake.streams.sink.clickhouse import connect

ROOT = Path(__file__).resolve().parents[2]


async def _publish(bootstrap: str, topic: str) -> UsageReporter:
    await ensure_topics(bootstrap, {topic: 2})
    reporter = UsageReporter(bootstrap, user_id_salt="salt", outcomes_topic=topic)
    await reporter.start()
    try:
        assert reporter.record_outcome(tenant_id="acme", feature_id="support", kind="ticket_resolved", user_id="bob",
                                       outcome_id="o1", value="12.50", session_id="s1")
        assert reporter.record_outcome(tenant_id="acme", feature_id="support", kind="ticket_resolved",
                                       outcome_id="o2", logical_call_ids=["c1", "c2"], quality=0.9)
        assert reporter.record_outcome(tenant_id="globex", feature_id="code", kind="pr_merged", outcome_id="o3")
        assert not reporter.record_outcome(tenant_id="acme", feature_id="support", kind="Not A Kind")
        assert not reporter.record_outcome(tenant_id="acme", feature_id="support", kind="x", value=0.5)  # float money
    finally:
        await reporter.stop()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b'{"outcome_id": "bad"}', key=b"acme")
    finally:
        await producer.stop()
    return reporter


def test_reported_outcomes_reach_clickhouse_once(broker, tmp_path):
    topic = f"outcomes-{uuid.uuid4().hex[:8]}"
    reporter = asyncio.run(_publish(broker.bootstrap, topic))
    assert (reporter.outcomes_sent, reporter.invalid, reporter.failed) == (3, 2, 0)
    dsn = f"chdb://{tmp_path / 'chdb'}"
    env = {**os.environ, "TOKENBRAKE_CLICKHOUSE_DSN": dsn, "TOKENBRAKE_HOME": str(tmp_path),
           "TOKENBRAKE_TOPIC_OUTCOMES": topic, "TOKENBRAKE_APP_ID": f"app-{uuid.uuid4().hex[:8]}"}

    def sink() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tokenbrake.streams", "outcomes", "sink", "--bootstrap", broker.bootstrap,
                               "--exit-when-caught-up"], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=120)

    done = sink()
    assert done.returncode == 0, done.stderr
    assert "3 outcomes stored, 1 invalid messages skipped" in done.stdout
    assert f"{topic}[" in done.stderr and "skipped: ts: Field required" in done.stderr
    again = sink()
    assert again.returncode == 0 and "0 outcomes stored, 0 invalid" in again.stdout, again.stderr
    client = connect(dsn)
    rows = client.query("SELECT outcome_id, tenant_id, kind, user_id, value, quality, logical_call_ids, session_id "
                        "FROM tokenbrake.outcomes FINAL ORDER BY outcome_id").result_rows
    client.close()
    assert rows == [("o1", "acme", "ticket_resolved", hash_user("bob", b"salt"), Decimal("12.5"), None, [], "s1"),
                    ("o2", "acme", "ticket_resolved", None, None, 0.9, ["c1", "c2"], None),
                    ("o3", "globex", "pr_merged", None, None, None, [], None)]
