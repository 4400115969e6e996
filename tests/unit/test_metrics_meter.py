"""WorkerMeter: what the hot path counts for /metrics (the rest is read at scrape time)."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import GPT4O_CALL_NANOS, event
from tokenbrake.streams.engine import PricedEvent
from tokenbrake.streams.metrics import WorkerMeter


def test_spend_and_tokens_count_fresh_events_only_within_the_label_caps() -> None:
    meter = WorkerMeter(tenant_label=True, max_tenants=1, max_label_values=1)
    for tenant, model in (("acme", "gpt-4o"), ("globex", "gpt-4o"), ("acme", "gpt-4o-mini")):
        ev = event(tenant_id=tenant, model=model, cached_input_tokens=400, reasoning_tokens=30)
        meter.priced(PricedEvent(ev, 0, GPT4O_CALL_NANOS, True, fresh=True))
        meter.priced(PricedEvent(ev, 0, GPT4O_CALL_NANOS, True, fresh=False))  # a redelivery: counted already
    assert meter.spend == {("acme", "chat", "gpt-4o"): [GPT4O_CALL_NANOS], ("other", "chat", "gpt-4o"): [
        GPT4O_CALL_NANOS], ("acme", "chat", "other"): [GPT4O_CALL_NANOS]}
    assert meter.tokens == [3000, 300, 1200, 0, 90]


def test_published_controls_alerts_and_latency() -> None:
    meter = WorkerMeter(max_label_values=1)
    control = SimpleNamespace(action="block")
    alerts = [SimpleNamespace(rule="budget", state="firing"), SimpleNamespace(rule="retry_storm", state="firing")]
    meter.published(SimpleNamespace(controls=[control, control], alerts=alerts))
    meter.decided(100.0, 2, now_s=100.25)
    meter.decided(None, 1)  # no producer timestamp: nothing observed
    assert meter.controls == {"block": 2}
    assert meter.alerts == {("budget", "firing"): 1, ("other", "firing"): 1}
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(meter.registry).decode())}
    samples = {s.name: s.value for s in families["tokenbrake_decision_latency_seconds"].samples if not s.labels
               or s.labels.get("le") == "0.25"}
    assert samples["tokenbrake_decision_latency_seconds_count"] == 2
    assert samples["tokenbrake_decision_latency_seconds_sum"] == 0.5
    assert samples["tokenbrake_decision_latency_seconds_bucket"] == 2
