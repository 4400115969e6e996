"""Kafka over TLS for real: a test CA, a TLS-terminating proxy in front of an embedded broker
that advertises the proxy's address, and the reporter, the kill switch, `tokenbrake control`
and a worker (its Faust app and every aiokafka client it makes) connecting only through it.
SASL cannot be tested against the embedded broker (Tansu has no SASL): tests/unit/test_security.py
checks the keyword arguments every client gets instead."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError

from tests.integration.conftest import ROOT, run
from tests.integration.tls import TLSProxy, make_test_ca
from tokenbrake.clients import KafkaSecurity, KillSwitch, UsageReporter
from tokenbrake.schemas.control import ControlEvent
from tokenbrake.streams.broker import EmbeddedBroker, free_port

POLICIES = """
budgets:
  - id: acme-day
    scope: {tenant: acme}
    period: day
    limit_usd: "0.10"
    on_exceed:
      - {at: 1.0, action: block}
"""


class TLSBroker:
    def __init__(self, broker: EmbeddedBroker, proxy: TLSProxy, certs: dict[str, Path]) -> None:
        self.broker, self.proxy, self.certs = broker, proxy, certs
        self.bootstrap = f"127.0.0.1:{proxy.port}"
        self.security = KafkaSecurity("SSL", ssl_cafile=str(certs["ca"]))


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSBroker]:
    directory = tmp_path_factory.mktemp("tls")
    certs = make_test_ca(directory / "certs")
    proxy_port = free_port()
    broker = EmbeddedBroker(log_path=directory / "broker.log", advertised=f"127.0.0.1:{proxy_port}")
    broker.start()
    proxy = TLSProxy(proxy_port, broker.port, certs["cert"], certs["key"]).start()
    try:
        yield TLSBroker(broker, proxy, certs)
    finally:
        proxy.stop()
        broker.stop()


def test_reporter_worker_killswitch_and_cli_over_tls(tls_broker, worker_env):
    tls = tls_broker
    worker = worker_env(POLICIES, kafka_bootstrap=tls.bootstrap, kafka_security_protocol="SSL",
                        kafka_ssl_cafile=str(tls.certs["ca"])).start()
    keys = worker.env["TOKENBRAKE_CONTROL_SIGNING_KEYS"]

    async def service() -> list[ControlEvent]:
        ks = KillSwitch(tls.bootstrap, worker.topic_control, keys=keys, security=tls.security, user_id_salt="s")
        reporter = UsageReporter(tls.bootstrap, worker.topic_usage, user_id_salt="s", linger_s=0.02,
                                 security=tls.security)
        seen: list[ControlEvent] = []
        ks.on_change.append(seen.append)
        await ks.start()
        await reporter.start()
        try:
            deadline = time.monotonic() + 60
            while not ks.decide("acme", "chat", "alice").blocked:
                assert time.monotonic() < deadline, f"no block over TLS; reporter sent {reporter.sent}"
                reporter.record(tenant_id="acme", feature_id="chat", user_id="alice", provider="openai",
                                model="gpt-4o", input_tokens=20_000, output_tokens=500)
                await asyncio.sleep(0.01)
            env = {**worker.env, "TOKENBRAKE_TOPIC_CONTROL": worker.topic_control}
            cli = subprocess.run([sys.executable, "-m", "tokenbrake.streams", "control", "block", "--tenant", "globex",
                                  "--reason", "over TLS"], env=env, cwd=ROOT, capture_output=True, text=True,
                                 timeout=60, check=False)
            assert cli.returncode == 0, cli.stderr
            while not ks.decide("globex").blocked:
                assert time.monotonic() < deadline, "the CLI's control did not arrive over TLS"
                await asyncio.sleep(0.05)
        finally:
            await reporter.stop()
            await ks.stop()
        assert reporter.failed == 0 and reporter.sent > 0
        return seen

    seen = run(service())
    assert [(c.issued_by, c.action, c.scope.tenant_id) for c in seen] == [("worker", "block", "acme"),
                                                                         ("operator", "block", "globex")]
    assert all(c.seq is not None for c in seen)
    assert worker.status()["counts"]["new"] > 0
    assert tls.proxy.handshakes >= 3  # the worker's, the service's and the CLI's connections


def test_a_broker_certificate_from_another_ca_is_refused(tls_broker):
    tls = tls_broker
    before = tls.proxy.handshakes
    wrong_ca = KafkaSecurity("SSL", ssl_cafile=str(tls.certs["other_ca"]))

    async def attempt(security: KafkaSecurity | None) -> None:
        ks = KillSwitch(tls.bootstrap, "any-topic", security=security)
        try:
            await ks.start(timeout_s=5)
        finally:
            await ks.stop()

    with pytest.raises(KafkaConnectionError):
        run(attempt(wrong_ca))
    with pytest.raises(KafkaConnectionError):  # and plaintext gets nowhere
        run(attempt(None))
    assert tls.proxy.handshakes == before


