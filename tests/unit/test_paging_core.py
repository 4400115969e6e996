"""The routes file, the incident state machine and the delivery primitives: pure, no I/O."""

from __future__ import annotations

import os
import random
from decimal import Decimal
from typing import Any

import pytest

from tokenbrake.schemas.control import AlertEvent, Scope
from tokenbrake.streams.paging.delivery import Breaker, TokenBucket, backoff_s, retry_after_s
from tokenbrake.streams.paging.incidents import (
    Incident,
    advance,
    apply_alert,
    delivered,
    expired,
    failed,
    pending,
    repost_due,
    series_of,
)
from tokenbrake.streams.paging.routes import RoutesError, parse_routes, read_secrets

ROUTES = """\
flap_window: 5m
routes:
  - id: pd-critical
    match: {severity: critical}
    pagerduty: {routing_key_env: TB_PD_KEY}
  - id: finops-slack
    match: {rule: [spend_spike, budget]}
    slack: {webhook_url_env: TB_SLACK_URL}
    quiet_hours: {tz: Europe/Berlin, from: "22:00", to: "07:00", except_severity: critical}
  - id: am
    alertmanager: {url: http://alertmanager:9093}
  - id: enterprise
    match: {tenant_tier: enterprise}
    webhook: {url_env: TB_HOOK_URL, secret_env: TB_HOOK_SECRET}
  - id: hook
    match: {tenant: acme, feature: chat}
    webhook: {url_env: TB_HOOK_URL, secret_env: TB_HOOK_SECRET}
"""
ENV = {"TB_PD_KEY": "pd-secret-key", "TB_SLACK_URL": "https://hooks.slack.com/services/T/B/secret",
       "TB_HOOK_URL": "http://127.0.0.1:9/hook", "TB_HOOK_SECRET": "hook-secret"}
T0 = 1_795_900_000_000  # 2026-11-28 21:06:40 UTC = 22:06 in Berlin (quiet)
NOON = 1_795_953_600_000  # 2026-11-29 12:00 UTC


def alert(state: str = "firing", severity: str = "warning", rule: str = "budget", at: int = T0, feature: str = "chat",
          policy: str | None = "acme-daily", n: int = 0, tier: str | None = None) -> AlertEvent:
    from tokenbrake.streams.emit.events import stable_id, ts_of

    scope = Scope(tenant_id="acme", feature_id=feature)
    return AlertEvent(alert_id=stable_id(rule, state, severity, at, n), ts=ts_of(at), rule=rule, scope=scope,
                      severity=severity, state=state, summary=f"{rule} {state}", observed=Decimal("52"),
                      threshold=Decimal("50"), dedup_key=f"{rule}:{scope.key()}:{at}", policy_id=policy,
                      tenant_tier=tier)


@pytest.fixture
def routes():  # noqa: ANN201
    return parse_routes(ROUTES)


# -- routes file ---------------------------------------------------------------------------------
def test_routes_file_errors_name_line_and_field():
    bad = ROUTES.replace("severity: critical", "severity: urgent").replace("slack: {webhook_url_env: TB_SLACK_URL}",
                                                                          "slack: {webhook_url: https://x}")
    with pytest.raises(RoutesError) as err:
        parse_routes(bad, "routes.yaml")
    text = str(err.value)
    assert "routes.yaml:4: routes.0.match.severity.0: Input should be 'info', 'warning' or 'critical'" in text
    assert "routes.yaml:8: routes.1.slack.webhook_url_env: Field required" in text
    assert "routes.yaml:8: routes.1.slack.webhook_url: Extra inputs are not permitted" in text


def test_a_route_has_exactly_one_receiver_and_ids_are_unique():
    with pytest.raises(RoutesError, match="routes.yaml:2: routes.0: Value error, a route has exactly one receiver"):
        parse_routes("routes:\n  - id: x\n    match: {}\n", "routes.yaml")
    with pytest.raises(RoutesError, match="route ids must be unique: a"):
        parse_routes("routes:\n  - {id: a, webhook: {url_env: A, secret_env: B}}\n"
                     "  - {id: a, webhook: {url_env: A, secret_env: B}}\n")
    with pytest.raises(RoutesError, match="unknown time zone 'Mars/Base'"):
        parse_routes("routes:\n  - id: a\n    slack: {webhook_url_env: S}\n"
                     "    quiet_hours: {tz: Mars/Base, from: '22:00', to: '07:00'}\n")


def test_missing_secrets_are_named_by_variable_never_by_value(routes):
    with pytest.raises(RoutesError) as err:
        read_secrets(routes, {"TB_PD_KEY": "pd-secret-key"})
    text = str(err.value)
    assert "route finops-slack: environment variable TB_SLACK_URL (url) is not set" in text
    assert "route hook: environment variable TB_HOOK_SECRET (secret) is not set" in text
    assert "pd-secret-key" not in text
    secrets = read_secrets(routes, ENV)
    assert secrets["pd-critical"].get("routing_key") == "pd-secret-key"
    assert secrets["am"].get("url") == "http://alertmanager:9093"
    shown = repr(secrets) + str(secrets["hook"].values)
    assert not any(value in shown for value in ENV.values())


def test_matching_and_quiet_hours(routes):
    pd, slack, am, enterprise, hook = routes.routes
    assert enterprise.match.matches("budget", "info", "acme", None, "enterprise")
    assert not enterprise.match.matches("budget", "info", "acme", None, None)  # detectors carry no tier
    assert pd.match.matches("budget", "critical", "acme", "chat")
    assert not pd.match.matches("budget", "warning", "acme", None)
    assert slack.match.matches("spend_spike", "info", "x", None)
    assert not slack.match.matches("retry_storm", "info", "x", None)
    assert am.match.matches("anything", "info", "x", None)
    assert hook.match.matches("r", "info", "acme", "chat") and not hook.match.matches("r", "info", "acme", None)
    quiet = slack.quiet_hours
    assert quiet.holds(T0, "warning") and not quiet.holds(T0, "critical") and not quiet.holds(NOON, "warning")
    assert routes.flap_window_ms == 300_000


# -- incidents -----------------------------------------------------------------------------------
def test_one_incident_while_it_fires_and_a_redelivered_alert_changes_nothing(routes):
    first = alert()
    inc = apply_alert(None, first, routes.routes, T0)
    assert inc.state == "open" and sorted(inc.routes) == ["am", "finops-slack", "hook"]
    assert "enterprise" in apply_alert(None, alert(tier="enterprise"), routes.routes, T0).routes
    assert apply_alert(inc, first, routes.routes, T0 + 1000) is None  # the same alert again
    assert apply_alert(inc, alert(n=1, at=T0 - 60_000), routes.routes, T0) is None  # older than what was applied
    repeat = apply_alert(inc, alert(at=T0 + 60_000, n=2), routes.routes, T0 + 60_000)
    assert repeat.dedup_key == inc.dedup_key and repeat.opened_ms == T0 and repeat.routes == inc.routes


def test_escalation_reaches_the_routes_that_now_match_and_not_again_the_others(routes):
    inc = apply_alert(None, alert(), routes.routes, NOON)
    inc = delivered(inc, "am", "trigger", NOON, 1)
    up = apply_alert(inc, alert(severity="critical", at=NOON + 1), routes.routes, NOON + 1)
    assert up.severity == "critical" and "pd-critical" in up.routes
    assert pending(up, routes.route("pd-critical"), NOON) == "trigger"
    assert pending(up, routes.route("am"), NOON) is None  # already has it
    down = apply_alert(up, alert(severity="warning", at=NOON + 2, n=3), routes.routes, NOON + 2)
    assert down.severity == "critical"  # an incident never de-escalates while it fires


def test_resolve_waits_for_the_flap_window_and_a_flap_reopens_the_same_incident(routes):
    flap = routes.flap_window_ms
    inc = delivered(apply_alert(None, alert(), routes.routes, NOON), "am", "trigger", NOON, 1)
    resolving = apply_alert(inc, alert("resolved", "info", at=NOON + 10_000), routes.routes, NOON + 10_000)
    assert resolving.state == "resolving" and pending(resolving, routes.route("am"), NOON + 10_000) is None
    assert advance(resolving, NOON + 10_000 + flap - 1, flap) is None
    again = apply_alert(resolving, alert(at=NOON + 20_000, n=4), routes.routes, NOON + 20_000)
    assert again.state == "open" and again.flaps == 1 and again.dedup_key == inc.dedup_key
    assert pending(again, routes.route("am"), NOON + 20_000) is None  # nobody paged again
    resolving = apply_alert(again, alert("resolved", "info", at=NOON + 30_000, n=5), routes.routes, NOON + 30_000)
    resolved = advance(resolving, NOON + 30_000 + flap, flap)
    assert resolved.state == "resolved"
    assert pending(resolved, routes.route("am"), NOON + 30_000 + flap) == "resolve"  # it got the trigger
    assert pending(resolved, routes.route("hook"), NOON + 30_000 + flap) is None  # never triggered: no resolve
    done = delivered(resolved, "am", "resolve", NOON + 40_000 + flap, 1)
    assert pending(done, routes.route("am"), NOON + 40_000 + flap) is None
    new = apply_alert(done, alert(at=NOON + 50_000 + flap, n=6), routes.routes, NOON + 50_000 + flap)
    assert new.state == "open" and new.opened_ms == NOON + 50_000 + flap and new.flaps == 0  # a new incident


def test_a_restart_derives_what_is_missing_from_the_persisted_record(routes):
    inc = apply_alert(None, alert(), routes.routes, NOON)
    inc = delivered(inc, "am", "trigger", NOON, 1)
    inc = failed(inc, "hook", "trigger", "HTTP 400: bad", 1)
    back = Incident.model_validate_json(inc.model_dump_json())  # what the compacted topic gives back
    assert pending(back, routes.route("am"), NOON) is None  # never re-paged
    assert pending(back, routes.route("hook"), NOON) is None  # dead-lettered: not tried again
    assert pending(back, routes.route("finops-slack"), NOON) == "trigger"  # still owed
    resolved = advance(apply_alert(back, alert("resolved", "info", at=NOON + 1), routes.routes, NOON + 1),
                       NOON + 1 + routes.flap_window_ms, routes.flap_window_ms)
    back = Incident.model_validate_json(resolved.model_dump_json())
    assert pending(back, routes.route("am"), NOON) == "resolve"  # never forgotten


def test_an_incident_that_ended_before_a_route_was_paged_never_pages_it(routes):
    inc = apply_alert(None, alert(), routes.routes, NOON)
    resolving = apply_alert(inc, alert("resolved", "info", at=NOON + 1), routes.routes, NOON + 1)
    assert pending(resolving, routes.route("am"), NOON + 1) is None
    resolved = advance(resolving, NOON + 1 + routes.flap_window_ms, routes.flap_window_ms)
    assert pending(resolved, routes.route("am"), NOON + 1 + routes.flap_window_ms) is None


def test_quiet_hours_hold_a_trigger_and_one_resolved_meanwhile_is_never_sent(routes):
    slack = routes.route("finops-slack")
    inc = apply_alert(None, alert(), routes.routes, T0)
    assert pending(inc, slack, T0) is None and pending(inc, slack, NOON) == "trigger"
    gone = advance(apply_alert(inc, alert("resolved", "info", at=T0 + 1), routes.routes, T0 + 1),
                   T0 + 1 + routes.flap_window_ms, routes.flap_window_ms)
    assert pending(gone, slack, NOON) is None


def test_alertmanager_reposts_while_firing_and_for_five_minutes_after_the_resolve(routes):
    am = routes.route("am")
    inc = delivered(apply_alert(None, alert(), routes.routes, NOON), "am", "trigger", NOON, 1)
    assert repost_due(inc, am, NOON + 59_000) is None and repost_due(inc, am, NOON + 60_000) == "trigger"
    assert repost_due(inc, routes.route("hook"), NOON + 60_000) is None
    resolved = advance(apply_alert(inc, alert("resolved", "info", at=NOON + 1), routes.routes, NOON + 1),
                       NOON + 1 + routes.flap_window_ms, routes.flap_window_ms)
    end = resolved.resolved_ms
    resolved = delivered(resolved, "am", "resolve", end, 1)
    assert repost_due(resolved, am, end + 60_000) == "resolve" and repost_due(resolved, am, end + 300_000) is None
    assert not expired(resolved, end + 3_600_000) and expired(resolved, end + 24 * 3_600_000)


def test_the_incident_identity_is_rule_policy_and_scope_not_values_or_times():
    a, b = alert(at=T0), alert(at=T0 + 3_600_000)
    assert series_of(a) == series_of(b) == "budget|acme-daily|tenant=acme/feature=chat/user=*/model=*"
    assert series_of(alert(policy=None)) != series_of(a)


# -- delivery primitives ---------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_spaces_events_at_the_route_rate():
    clock = Clock()
    bucket = TokenBucket(60, clock=clock)  # one a second (Slack)
    assert bucket.wait_s() == 0
    bucket.take()
    assert bucket.wait_s() == pytest.approx(1.0)
    clock.t = 0.5
    assert bucket.wait_s() == pytest.approx(0.5)
    clock.t = 1.0
    assert bucket.wait_s() == 0


def test_breaker_opens_after_five_failures_and_half_opens_after_the_cooldown():
    clock = Clock()
    breaker = Breaker(clock=clock)
    for _ in range(4):
        breaker.failure()
    assert breaker.state == "closed" and breaker.wait_s() == 0
    breaker.failure()
    assert breaker.state == "open" and breaker.wait_s() == 30
    clock.t = 30
    assert breaker.state == "half_open" and breaker.wait_s() == 0
    breaker.failure()  # the trial failed: open again
    assert breaker.state == "open"
    breaker.success()
    assert breaker.state == "closed"


def test_backoff_is_exponential_with_full_jitter_from_the_injected_rng():
    rng_a, rng_b = random.Random(7), random.Random(7)
    a = [backoff_s(n, rng_a) for n in range(1, 10)]
    assert a == [backoff_s(n, rng_b) for n in range(1, 10)]  # same seed, same delays
    assert all(0 <= d <= min(30, 0.5 * 2 ** (n - 1)) for n, d in enumerate(a, 1))
    headers: dict[str, Any] = {"Retry-After": "3"}
    assert retry_after_s(headers) == 3 and retry_after_s({"Retry-After": "soon"}) is None
    assert retry_after_s({"Retry-After": "99999"}) == 120


# -- the delivery runner, with a scripted receiver and recorded sleeps -------------------------------
class Answer:
    def __init__(self, status: int, text: str = "", headers: dict[str, str] | None = None) -> None:
        self.status, self._text, self.headers = status, text, headers or {}

    async def text(self, errors: str = "strict") -> str:
        return self._text

    async def __aenter__(self) -> Answer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class ScriptedSession:
    """Answers each post with the next scripted answer (``None``: never answers)."""

    def __init__(self, script: list[Answer | None]) -> None:
        self.script, self.posted = list(script), []

    def post(self, url: str, data: bytes, headers: dict[str, str], **kw: Any) -> Any:
        self.posted.append(data)
        answer = self.script.pop(0)
        if answer is None:
            return Hang()
        return answer


class Hang:
    async def __aenter__(self) -> None:
        import asyncio

        await asyncio.Event().wait()

    async def __aexit__(self, *exc: object) -> None:
        return None


def runner_for(script: list[Answer | None], route_yaml: str, sleeps: list[float]) -> Any:
    from tokenbrake.streams.paging.delivery import RouteRunner

    routes = parse_routes(route_yaml)
    secrets = read_secrets(routes, ENV)
    route = routes.routes[0]

    async def sleep(s: float) -> None:
        sleeps.append(s)

    async def done(*_: Any) -> None:
        return None

    return RouteRunner(route, secrets[route.id], ScriptedSession(script), random.Random(3), done, queue_max=2,
                       sleep=sleep)


def a_notice() -> Any:
    from tokenbrake.streams.paging.receivers import notice_of

    return notice_of(apply_alert(None, alert(), [], NOON), "trigger", NOON, "http://g")


PD_ROUTE = "routes:\n  - {id: pd, pagerduty: {routing_key_env: TB_PD_KEY}, rate_per_minute: 6000, max_attempts: 4}\n"


async def test_retries_with_jittered_backoff_and_honours_retry_after():
    sleeps: list[float] = []
    runner = runner_for([Answer(500), Answer(429, "slow down", {"Retry-After": "7"}), Answer(202, "ok")], PD_ROUTE,
                        sleeps)
    outcome = await runner.deliver(a_notice(), 4)
    assert (outcome.ok, outcome.attempts, outcome.status) == (True, 3, 202)
    waits = [s for s in sleeps if s > 0.01]  # (the rate limit at 100/s waits ~0.01 between attempts)
    rng = random.Random(3)
    assert waits == [backoff_s(1, rng), 7.0]  # jitter from the injected RNG, then the receiver's Retry-After


async def test_a_4xx_is_final_and_answers_never_carry_a_secret():
    sleeps: list[float] = []
    runner = runner_for([Answer(400, "invalid routing_key pd-secret-key")], PD_ROUTE, sleeps)
    outcome = await runner.deliver(a_notice(), 4)
    assert (outcome.ok, outcome.final, outcome.attempts) == (False, True, 1)
    assert outcome.error == "HTTP 400: invalid routing_key ***" and "pd-secret-key" not in outcome.answer


async def test_a_hanging_receiver_costs_one_timeout_per_attempt_then_gives_up():
    sleeps: list[float] = []
    route = "routes:\n  - {id: pd, pagerduty: {routing_key_env: TB_PD_KEY}, timeout_s: 0.05, max_attempts: 2}\n"
    runner = runner_for([None, None], route, sleeps)
    outcome = await runner.deliver(a_notice(), 2)
    assert (outcome.ok, outcome.attempts, outcome.error) == (False, 2, "timeout after 0.05s")


def test_the_route_queue_is_bounded():
    from tokenbrake.streams.paging.delivery import Job

    runner = runner_for([], PD_ROUTE, [])
    job = Job("s", "pd", "trigger", a_notice())
    assert runner.offer(job) and runner.offer(job) and not runner.offer(job)


def test_a_day_old_firing_alert_opens_no_incident(routes):
    assert apply_alert(None, alert(at=NOON - 24 * 3_600_000 - 1), routes.routes, NOON) is None
    assert apply_alert(None, alert(at=NOON - 3_600_000), routes.routes, NOON) is not None  # an outage's backlog


def test_the_worker_refuses_to_start_on_a_bad_routes_file_naming_line_field_and_variable(tmp_path, monkeypatch, capsys):
    from tokenbrake.streams.cli import main

    for name in [k for k in os.environ if k.startswith("TOKENBRAKE_") or k.startswith("TB_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES.replace("severity: critical", "severity: urgent"))
    monkeypatch.setenv("TOKENBRAKE_PAGING_ROUTES_PATH", str(path))
    assert main(["run"]) == 2
    assert f"{path}:4: routes.0.match.severity.0: Input should be" in capsys.readouterr().err
    path.write_text(ROUTES)
    monkeypatch.setenv("TB_PD_KEY", "pd-secret-key")
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "route finops-slack: environment variable TB_SLACK_URL (url) is not set" in err
    assert "pd-secret-key" not in err
