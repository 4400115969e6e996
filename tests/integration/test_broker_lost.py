"""A worker whose broker is gone for good stops (exit 1) after ``BROKER_LOST_EXIT_S`` so a
supervisor can restart it, instead of retrying for ever."""

from __future__ import annotations

import time

from tokenbrake.streams.broker import EmbeddedBroker


def test_a_worker_stops_when_its_broker_is_gone(worker_env, tmp_path):
    own = EmbeddedBroker(log_path=tmp_path / "own-broker.log")  # not the session's: this one dies
    own.start()
    try:
        worker = worker_env(kafka_bootstrap=own.bootstrap, broker_lost_exit_s="4", shutdown_timeout_s="3").start()
        assert worker.status()["worker"]["broker_silent_s"] < 4  # in contact
        own.stop()
        started = time.monotonic()
        code = worker.proc.wait(timeout=60)
        waited = time.monotonic() - started
    finally:
        own.stop()
    assert code == 1, worker.log_tail()
    assert waited >= 4, waited  # not before the limit
    assert "no answer from the broker" in (worker.home / "worker.log").read_text(errors="replace")
