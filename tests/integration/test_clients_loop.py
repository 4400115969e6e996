"""Issue #3's loop on real parts: a service reports usage with UsageReporter, the worker
downgrades then blocks it, and the same service's KillSwitch sees each decision."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from tests.integration.conftest import ROOT, produce, run
from tokenbrake.clients import KillSwitch, UsageReporter, from_openai_usage
from tokenbrake.schemas.control import ControlEvent
from tokenbrake.streams.operator import build_control, publish_control
from tokenbrake.streams.price import PriceBook
from tokenbrake.streams.price.rates import nanos_to_usd
from tokenbrake.streams.settings import Settings

POLICIES = """
budgets:
  - id: acme-day
    scope: {tenant: acme}
    period: day
    limit_usd: "1.00"
    on_exceed:
      - {at: 1.0, action: downgrade, to_model: gpt-4o-mini}
      - {at: 2.0, action: block}
"""
USAGE = {"prompt_tokens": 20_000, "completion_tokens": 800, "prompt_tokens_details": {"cached_tokens": 4_000}}


async def service_loop(bootstrap: str, usage_topic: str, control_topic: str, keys: str) -> dict:
    ks = KillSwitch(bootstrap, control_topic, keys=keys, user_id_salt="s")
    reporter = UsageReporter(bootstrap, usage_topic, user_id_salt="s", linger_s=0.02, batch_size=50)
    seen: dict[str, float] = {}
    ks.on_change.append(lambda c: seen.setdefault(c.action, time.monotonic()))
    await ks.start()
    await reporter.start()
    book, spent, crossed, spent_at = PriceBook(), 0, {}, []
    tokens = from_openai_usage(USAGE)
    try:
        deadline = time.monotonic() + 60
        while "block" not in seen and time.monotonic() < deadline:
            decision = ks.decide("acme", "chat", "u1")
            if decision.admit():
                model = decision.model("gpt-4o")
                reporter.record(tenant_id="acme", feature_id="chat", user_id="u1", provider="openai", model=model,
                                **tokens)
                spent += book.price("openai", model, int(time.time() * 1000), tokens["input_tokens"],
                                    tokens["output_tokens"], tokens["cached_input_tokens"]).cost_nanos
                now = time.monotonic()
                spent_at.append((now, spent))
                for name, limit in (("downgrade", 10**9), ("block", 2 * 10**9)):
                    if spent >= limit and name not in crossed:
                        crossed[name] = (now, spent)
            await asyncio.sleep(0.005)
    finally:
        await reporter.stop()
        await ks.stop()
    report = {"spent_usd": str(nanos_to_usd(spent)), "rejected": ks.rejected, "order": list(seen)}
    for name, (t_cross, at_cross) in crossed.items():
        latency = seen[name] - t_cross
        slipped = max(s for t, s in spent_at if t <= seen[name]) - at_cross
        report[name] = {"reaction_ms": round(latency * 1000, 1), "overshoot_usd": str(nanos_to_usd(slipped))}
    return report


def test_reporter_worker_killswitch_loop(worker_env, broker):
    worker = worker_env(POLICIES).start()
    keys = worker.env["TOKENBRAKE_CONTROL_SIGNING_KEYS"]
    report = run(service_loop(broker.bootstrap, worker.topic_usage, worker.topic_control, keys))
    assert report["order"] == ["downgrade", "block"]
    assert report["rejected"] == 0
    for step in ("downgrade", "block"):
        assert 0 < report[step]["reaction_ms"] < 10_000
        assert Decimal(report[step]["overshoot_usd"]) >= 0
    status = worker.wait_counted(1)
    deadline = time.monotonic() + 20
    while Decimal(next(r for r in status["spend"] if r["scope"] == "t=acme")["today_usd"]) < \
            Decimal(report["spent_usd"]) and time.monotonic() < deadline:
        time.sleep(0.2)
        status = worker.status()
    # what the service spent is exactly what the worker counted (the reporter lost nothing)
    assert next(r for r in status["spend"] if r["scope"] == "t=acme")["today_usd"] == report["spent_usd"]
    (ROOT / ".tokenbrake").mkdir(exist_ok=True)
    (ROOT / ".tokenbrake" / "loop-report.json").write_text(json.dumps(report, indent=2))
    print("\nkill-switch loop:", json.dumps(report))


def test_forged_controls_change_no_decision(worker_env, broker):
    worker = worker_env()
    settings = Settings(kafka_bootstrap=broker.bootstrap, topic_control=worker.topic_control,
                        control_signing_keys=worker.env["TOKENBRAKE_CONTROL_SIGNING_KEYS"])
    real = build_control("block", "globex", None, None, None, None, None, None, "real")
    forged = real.model_copy(update={"scope": real.scope.model_copy(update={"tenant_id": "acme"})})

    async def scenario() -> tuple[str, str, int]:
        from tokenbrake.streams.broker import ensure_topics

        await ensure_topics(broker.bootstrap, {worker.topic_control: 1})
        ks = KillSwitch(broker.bootstrap, worker.topic_control, keys=settings.keyring)
        await ks.start()
        signed = await publish_control(settings, broker.bootstrap, real)
        tampered = signed.model_copy(update={"scope": forged.scope})
        wrong_key = ControlEvent.model_validate({**signed.model_dump(), "scope": forged.scope.model_dump(),
                                                 "signature": "ab" * 32})
        await produce(broker.bootstrap, worker.topic_control, [
            (b"tenant=acme/feature=*/user=*/model=*", forged.model_dump_json().encode()),  # unsigned
            (b"tenant=acme/feature=*/user=*/model=*", tampered.model_dump_json().encode()),
            (b"tenant=acme/feature=*/user=*/model=*", wrong_key.model_dump_json().encode()),
        ])
        deadline = time.monotonic() + 10
        while ks.rejected < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        result = ks.decide("acme").action, ks.decide("globex").action, ks.rejected
        await ks.stop()
        return result

    assert run(scenario()) == ("allow", "block", 3)


def test_example_service_runs_and_gets_downgraded(worker_env, broker, monkeypatch):
    import importlib.util

    worker = worker_env(POLICIES.replace('"1.00"', '"0.50"').replace("at: 2.0", "at: 100.0")).start()
    monkeypatch.setenv("TOKENBRAKE_CONTROL_SIGNING_KEYS", worker.env["TOKENBRAKE_CONTROL_SIGNING_KEYS"])
    spec = importlib.util.spec_from_file_location("example_service", ROOT / "examples" / "service.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    async def calls() -> list[str]:
        return await module.main(broker.bootstrap, calls=2000, usage=worker.topic_usage, control=worker.topic_control)

    results = run(calls())
    assert results[0] == "gpt-4o"
    assert "gpt-4o-mini" in results  # the kill switch downgraded the service mid-run


def _alive(pid: int) -> bool:
    try:  # a zombie waiting for its new parent to reap it is dead too
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_children_die_with_their_launcher(tmp_path):
    """A launcher killed with SIGKILL (no cleanup runs) leaves no embedded broker behind."""
    script = tmp_path / "launcher.py"
    script.write_text("import sys, time\nfrom tokenbrake.streams.broker import EmbeddedBroker\n"
                      "b = EmbeddedBroker()\nb.start()\nprint(b._proc.pid, flush=True)\ntime.sleep(60)\n")
    launcher = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    broker_pid = int(launcher.stdout.readline())
    os.kill(broker_pid, 0)  # running
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 10
    while _alive(broker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(broker_pid), f"embedded broker {broker_pid} outlived its launcher"
    launcher.stdout.close()


def test_a_block_by_hand_holds_against_the_budget_until_lifted(worker_env, broker):
    """On-call blocks a tenant by hand; the tenant's budget then crosses its downgrade level:
    the block stays (before, the worker's downgrade overwrote it on the compacted topic).
    Lifted by hand, the budget's own decision is published again."""
    from tests.integration.conftest import event_json, msg

    worker = worker_env(POLICIES).start()
    settings = Settings(kafka_bootstrap=broker.bootstrap, topic_control=worker.topic_control,
                        control_signing_keys=worker.env["TOKENBRAKE_CONTROL_SIGNING_KEYS"])

    async def scenario() -> tuple[str, str, str]:
        ks = KillSwitch(broker.bootstrap, worker.topic_control, keys=settings.keyring)
        seen: list[ControlEvent] = []
        ks.on_change.append(seen.append)
        await ks.start()
        await publish_control(settings, broker.bootstrap, build_control("block", "acme", None, None, None, None,
                                                                        None, None, "incident 42"))
        await asyncio.sleep(1.5)  # the worker reads it back
        events = [event_json(input_tokens=400_000, output_tokens=1_000)]  # $1.01: the downgrade level
        await produce(broker.bootstrap, worker.topic_usage, [msg(e) for e in events])
        worker.wait_counted(1)
        await asyncio.sleep(1.5)
        during = ks.decide("acme").action
        await publish_control(settings, broker.bootstrap, build_control("allow", "acme", None, None, None, None,
                                                                        None, None, "incident over"))
        deadline = time.monotonic() + 10
        while not (seen and seen[-1].issued_by == "worker") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the operator's allow, then the worker's correction
        assert [(c.issued_by, c.action) for c in seen] == [("operator", "block"), ("operator", "allow"),
                                                          ("worker", "downgrade")]
        after = ks.decide("acme")
        await ks.stop()
        return during, after.action, after.reason

    during, after, reason = run(scenario())
    assert during == "block"  # the budget's downgrade did not overwrite the operator's block
    assert after == "downgrade" and "acme-day" in reason  # lifted: the budget's decision is back
