"""A real worker stores its pipeline_health rows (streams.runtime.health) through its sink:
dead letters by reason counted once across rows, lag and sink buffer present."""

from __future__ import annotations

import time

from tests.integration.conftest import consume_all, event_json, msg, produce, run
from tokenbrake.streams.sink.clickhouse import connect


def test_worker_writes_pipeline_health_rows(worker_env, broker):
    worker = worker_env("", pipeline_health_interval_s="0.5").start()
    run(produce(broker.bootstrap, worker.topic_usage, [msg(event_json()), (b"acme", b"{not json"),
                                                        (b"acme", b"")]))
    worker.wait_counted(1)
    assert len(run(consume_all(broker.bootstrap, worker.topic_dlq, expect=2))) == 2
    flushes = worker.status()["worker"]["sink"]["flushes"]
    deadline = time.monotonic() + 30
    while worker.status()["worker"]["sink"]["flushes"] < flushes + 3:  # rows written after the dead letters
        assert time.monotonic() < deadline, worker.status()["worker"]["sink"]
        time.sleep(0.2)
    pid = worker.proc.pid
    worker.stop()
    client = connect(f"chdb://{worker.home / 'chdb'}")
    count, workers, dead = client.query("SELECT count(), groupUniqArray(worker), sumMap(dead_letters) "
                                        "FROM tokenbrake.pipeline_health FINAL").result_rows[0]
    client.close()
    assert count >= 3 and len(workers) == 1 and workers[0].endswith(f":{pid}")
    assert dead == {"empty": 1, "not_json": 1}  # each dead letter in exactly one row
