"""The OTLP input on a real worker: the Collector's exports (both encodings) in, the same
totals and ClickHouse rows out as the same calls sent as UsageEvents; retries counted once;
malformed and unattributable exports dead-lettered with their reason."""

from __future__ import annotations

import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

from tests.integration.conftest import consume_all, produce, run
from tests.integration.test_metrics import scrape, value
from tests.otlp_spans import Service, chat, json_bytes, proto_bytes
from tests.unit.test_otlp_ingest import expected_events, mixed_batch
from tokenbrake.schemas.codec import dumps
from tokenbrake.streams.sink.clickhouse import connect

COLUMNS = ("tenant_id, feature_id, user_id, provider, model, input_tokens, output_tokens, cached_input_tokens, "
           "cache_write_tokens, reasoning_tokens, status, cost_usd, ts")


def _rows(home: Path, tenants: tuple[str, ...]) -> list[tuple]:
    client = connect(f"chdb://{home / 'chdb'}")
    rows = client.query(f"SELECT {COLUMNS} FROM tokenbrake.usage_events FINAL WHERE tenant_id IN %(t)s",  # noqa: S608
                        parameters={"t": tenants}).result_rows
    return sorted((r[0].removeprefix("u-"), *r[1:]) for r in rows)


async def produce_with_headers(bootstrap: str, topic: str, value: bytes, headers: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, headers=headers)
    finally:
        await producer.stop()


def test_otlp_exports_count_exactly_like_usage_events(worker_env, broker):
    worker = worker_env(OTLP_ENABLED="true", TOPIC_OTLP=f"otlp-{uuid.uuid4().hex[:8]}",
                        OTLP_USER_ID_SALT="reporter-salt",
                        OTLP_TENANT_FROM="span:tenant.id,resource:tenant.id,header:x-tenant-id").start()
    spans = mixed_batch()
    bot = [s for s in spans if s.resource.attributes["service.name"] == "support-bot"]
    search = [s for s in spans if s.resource.attributes["service.name"] == "search"]
    anon = Service("anonymous")
    anon.call(chat())
    exports = [(None, proto_bytes(bot)), (None, json_bytes(search)), (None, b"\x0a\x05garbage"),
               (None, proto_bytes(anon.spans())), (None, proto_bytes(bot))]  # the last: the Collector's retry
    run(produce(broker.bootstrap, worker.topic_otlp, exports))

    # the same calls from services' reporters, under twin tenants, at the spans' end times
    calls = [s for s in spans if s.attributes["gen_ai.operation.name"] in ("chat", "embeddings")]
    twins = []
    for i, (e, span) in enumerate(zip(expected_events(), calls, strict=True)):
        twin = {**e, "event_id": f"twin-{i}", "tenant_id": "u-" + e["tenant_id"], "ts": span.end_time // 1_000_000}
        twins.append((twin["tenant_id"].encode(), dumps(twin)))
    run(produce(broker.bootstrap, worker.topic_usage, twins))

    status = worker.wait_counted(10)  # 5 calls each way
    status = worker.wait_counted(3, key="duplicate")  # the retried export's 3 events
    assert status["counts"]["new"] == 10
    spend = {r["scope"]: r for r in status["spend"]}
    for tenant in ("acme", "globex"):
        otlp, usage = spend[f"t={tenant}"], spend[f"t=u-{tenant}"]
        assert {k: v for k, v in otlp.items() if k != "scope"} == {k: v for k, v in usage.items() if k != "scope"}

    dlq = run(consume_all(broker.bootstrap, worker.topic_dlq, expect=2))
    assert sorted(dict(r.headers)["tokenbrake-reason"].decode() for r in dlq) == ["not_otlp", "unattributed"]

    metrics = scrape(worker)
    assert value(metrics, "tokenbrake_otlp_messages_total") == 5
    assert {o: value(metrics, "tokenbrake_otlp_spans_total", outcome=o)
            for o in ("counted", "not_inference", "no_usage", "rejected")} == {
        "counted": 8, "not_inference": 4, "no_usage": 0, "rejected": 1}  # the retried export's spans count twice here
    assert value(metrics, "tokenbrake_dead_letters_total", reason="unattributed") == 1

    # the Collector's include_metadata_keys: the tenant in a Kafka header
    run(produce_with_headers(broker.bootstrap, worker.topic_otlp, proto_bytes(anon.spans()),
                             [("x-tenant-id", b"initech")]))
    status = worker.wait_counted(11)
    assert status["counts"]["new"] == 11 and any(r["scope"] == "t=initech" for r in status["spend"])

    worker.wait_flushed(11)
    worker.stop()
    otlp_rows, usage_rows = _rows(worker.home, ("acme", "globex")), _rows(worker.home, ("u-acme", "u-globex"))
    assert len(otlp_rows) == 5 and otlp_rows == usage_rows
