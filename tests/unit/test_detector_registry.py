"""Adding a detector is one file and one registry line: toy detectors defined here, on a bucket of
their own and on a built-in one, are scored by the hub, fire and resolve, with no change to the hub."""

import dataclasses
from collections.abc import Iterator
from decimal import Decimal

import pytest
from river import base

from tokenbrake.detectors.buckets import CALLS_MINUTE, MINUTE_MS, TOKENS_HOUR, Bucket, Closed, Judged
from tokenbrake.detectors.registry import REGISTRY, DetectorSpec
from tokenbrake.streams.decide.board import ControlBoard
from tokenbrake.streams.decide.detection import DetectorHub, buckets_of
from tokenbrake.streams.emit.events import Emitted

T0 = 1_767_225_600_000  # a UTC midnight


class ErrorRate(base.AnomalyDetector):
    """Flags a minute whose share of failed calls reaches ``max_share`` (a toy: no baseline)."""

    def __init__(self, max_share: float = 0.5, min_requests: int = 10) -> None:
        self.max_share = max_share
        self.min_requests = min_requests
        self.learned = 0

    def enough(self, x: dict) -> bool:
        return x.get("requests", 0) >= self.min_requests

    def learn_one(self, x: dict) -> None:
        self.learned += 1

    def score_one(self, x: dict) -> float:
        return x.get("errors", 0) / max(x.get("requests", 0), 1) / self.max_share


def add_errors(counters, tenant, feature, user, model, cost, input_tokens, retry, error, cached_tokens) -> None:
    per_tenant = counters.get((tenant,))
    if per_tenant is None:
        per_tenant = counters[(tenant,)] = [0, 0]
    per_tenant[0] += 1
    per_tenant[1] += error


ERRORS_MINUTE = Bucket("errors_minute", MINUTE_MS, "(tenant,) -> [requests, errors]", add=add_errors)


def errors_per_tenant(closed: Closed, memory: dict) -> Iterator[Judged]:
    for scope, (requests, errors) in closed.counters.items():
        yield scope, {"requests": requests, "errors": errors}, Decimal(errors) / max(requests, 1)


def errors_per_feature(closed: Closed, memory: dict) -> Iterator[Judged]:
    """The same rule read off the built-in minute bucket: no work per event at all."""
    per_feature: dict[tuple, list[int]] = {}
    for (tenant, feature, _), (requests, _, errors, _) in closed.counters.items():
        counts = per_feature.setdefault((tenant, feature), [0, 0])
        counts[0] += requests
        counts[1] += errors
    for scope, (requests, errors) in per_feature.items():
        yield scope, {"requests": requests, "errors": errors}, Decimal(errors) / max(requests, 1)


ON_ITS_OWN_BUCKET = DetectorSpec("error_rate", ErrorRate, ERRORS_MINUTE, (("tenant",),), ("requests", "errors"),
                                 errors_per_tenant)
ON_THE_MINUTE_BUCKET = DetectorSpec("feature_error_rate", ErrorRate, CALLS_MINUTE, (("tenant", "feature"),),
                                    ("requests", "errors"), errors_per_feature)


def _run(registry, config, minutes=12, failing=range(4, 7)):
    """20 calls a minute for acme/chat: 1 in 20 fails, 15 in 20 during ``failing``; the watermark
    follows each minute (so the minute before closes)."""
    out = Emitted()
    hub = DetectorHub(config, out, ControlBoard(out), registry=registry)
    for minute in range(minutes):
        for i in range(20):
            error = i % 4 != 0 if minute in failing else i == 0
            hub.observe("acme", "chat", f"u{i}", "gpt-4o", T0 + minute * MINUTE_MS + i * 2_000, 1_000_000, 500,
                        retry=False, error=error)
        hub.advance(T0 + minute * MINUTE_MS + 59_000)
    hub.advance(T0 + (minutes + 1) * MINUTE_MS)
    return hub, out


def _alerts(out, rule):
    return [(a.state, a.scope.key(), int(a.ts.timestamp() * 1000) - T0, a.dedup_key)
            for a in out.alerts if a.rule == rule]


@pytest.mark.parametrize("spec", [ON_ITS_OWN_BUCKET, ON_THE_MINUTE_BUCKET], ids=["own bucket", "minute bucket"])
def test_a_new_detector_fires_and_resolves_with_no_change_to_the_hub(spec):
    hub, out = _run(REGISTRY + (spec,), {spec.rule: {"cooldown": 2}})
    scope = "tenant=acme/feature=*/user=*/model=*" if spec.scopes == (("tenant",),) else \
        "tenant=acme/feature=chat/user=*/model=*"
    fired_at = 5 * MINUTE_MS  # minute 4 closes: 15 failures in 20 calls
    assert _alerts(out, spec.rule) == [
        ("firing", scope, fired_at, f"{spec.rule}:{scope}:{T0 + fired_at}"),
        ("resolved", scope, 9 * MINUTE_MS, f"{spec.rule}:{scope}:{T0 + fired_at}"),  # two normal minutes: 7, 8
    ]
    scope_key = ("acme",) if spec.scopes == (("tenant",),) else ("acme", "chat")
    # the flagged minutes 4, 5, 6 were never learned; the other nine were
    assert hub.models[(spec.rule, scope_key)].learned == 9 and (spec.rule, scope_key) in hub.dirty
    assert ("retry_storm", ("acme", "chat", "gpt-4o")) in hub.models  # the registry's own still run beside it


def test_a_new_detector_that_issues_controls_puts_one_on_the_board_and_lifts_it():
    spec = dataclasses.replace(ON_ITS_OWN_BUCKET, issues_controls=True)
    _, out = _run(REGISTRY + (spec,), {"error_rate": {"cooldown": 2, "action": "throttle", "max_rps": 3}})
    assert [(c.action, c.max_rps, c.scope.tenant_id, c.reason.rule, c.reason.period, c.reason.detail)
            for c in out.controls] == [
        ("throttle", 3.0, "acme", "error_rate", "1m", "error_rate score 1.5"),
        ("allow", None, "acme", "error_rate", "1m", "error rate back to normal"),
    ]
    assert [a.severity for a in out.alerts if a.rule == "error_rate"] == ["critical", "info"]

def test_the_new_detector_is_configured_like_the_others():
    _, out = _run(REGISTRY + (ON_ITS_OWN_BUCKET,), {"error_rate": {"max_share": 0.9}})
    assert _alerts(out, "error_rate") == []  # 75% failing is under its bar now
    _, out = _run(REGISTRY + (ON_ITS_OWN_BUCKET,), {"error_rate": {"enabled": False}})
    assert _alerts(out, "error_rate") == []
    with pytest.raises(ValueError, match="error_rate"):
        DetectorHub({"error_rate": {}}, Emitted(), ControlBoard(Emitted()))  # not registered


def test_a_built_in_bucket_no_detector_reads_is_closed_all_the_same():
    registry = tuple(spec for spec in REGISTRY if spec.bucket != TOKENS_HOUR)
    hub, _ = _run(registry, {}, minutes=3 * 60, failing=())
    assert hub._open[TOKENS_HOUR.name] == {}  # three hours filled, three closed: none kept for ever
    assert not any(rule == "token_inflation" for rule, _ in hub.models)


@pytest.mark.parametrize("bad, message", [
    (DetectorSpec("x", ErrorRate, ERRORS_MINUTE, (("tenant",),), ("errors",)), "declares no features_of"),
    (DetectorSpec("x", ErrorRate, ERRORS_MINUTE, (("tenant",),), ("errors",), errors_per_tenant,
                  early=lambda det, counters: None), "early scoring is on calls_minute only"),
    (DetectorSpec("x", ErrorRate, Bucket("errors_minute", MINUTE_MS, "?"), (("tenant",),), ("errors",),
                  errors_per_tenant), "is not built in and declares no add"),
    (DetectorSpec("x", ErrorRate, Bucket("calls_minute", MINUTE_MS, "?", add=add_errors), (("tenant",),),
                  ("errors",), errors_per_tenant), "another bucket is already named 'calls_minute'"),
    (DetectorSpec("retry_storm", ErrorRate, ERRORS_MINUTE, (("tenant",),), ("errors",), errors_per_tenant),
     "registered twice"),
])
def test_a_registry_the_hub_cannot_run_is_refused_by_name(bad, message):
    with pytest.raises(ValueError, match=message):
        buckets_of(REGISTRY + (bad,))
