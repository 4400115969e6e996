"""OTLP GenAI spans -> UsageEvents (streams/ingest/otlp*.py, genai.py, attribution.py)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.helpers import engine
from tests.otlp_spans import Service, chat, json_bytes, json_doc, proto_bytes
from tokenbrake.clients.reporter import hash_user
from tokenbrake.schemas.codec import dumps, loads
from tokenbrake.schemas.usage import UsageEvent
from tokenbrake.streams.ingest.attribution import Attribution
from tokenbrake.streams.ingest.dedupe import Seen
from tokenbrake.streams.ingest.otlp_events import OtlpTranslator, event_id
from tokenbrake.streams.settings import Settings

SALT = b"reporter-salt"
DATA = Path(__file__).resolve().parents[1] / "data" / "otlp"
EVENT_FIELDS = ("tenant_id", "feature_id", "user_id", "provider", "model", "input_tokens", "output_tokens",
                "cached_input_tokens", "cache_write_tokens", "reasoning_tokens", "status")


def translator(**kw: Any) -> OtlpTranslator:
    attribution = Attribution(kw.pop("tenant", "span:tenant.id,resource:tenant.id"), kw.pop("feature", ""),
                              "span:enduser.pseudo.id,resource:enduser.pseudo.id,span:user.id,resource:user.id",
                              "resource:deployment.environment.name,resource:deployment.environment",
                              "span:gen_ai.conversation.id,span:session.id", SALT)
    return OtlpTranslator(attribution, **kw)


def mixed_batch() -> list[Any]:
    """Two services (two resources), an agent span over two chat spans, a failed attempt, a tool span."""
    bot = Service("support-bot", **{"tenant.id": "acme", "deployment.environment.name": "prod"})
    with bot.agent({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support",
                    "gen_ai.usage.input_tokens": 3000, "gen_ai.usage.output_tokens": 300}):
        bot.call(chat(inp=1000, out=100, **{"enduser.pseudo.id": "u1", "gen_ai.response.model": "gpt-4o-2024-08-06"}))
        bot.call(chat(inp=2000, out=200, **{"enduser.pseudo.id": "u1", "gen_ai.usage.cache_read.input_tokens": 1500}))
        bot.call({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"}, name="execute_tool")
    bot.call(chat(inp=0, out=0), error=True)
    search = Service("search", scope="opentelemetry.instrumentation.anthropic", **{"tenant.id": "globex"})
    search.call(chat("claude-3-5-haiku-20241022", "anthropic", 700, 50, **{"user.id": "u9"}), name="chat haiku")
    search.call({"gen_ai.operation.name": "embeddings", "gen_ai.provider.name": "openai",
                 "gen_ai.request.model": "text-embedding-3-small", "gen_ai.usage.input_tokens": 400}, name="embed")
    return bot.spans() + search.spans()


def expected_events() -> list[dict[str, Any]]:
    """The same calls, as a service's UsageReporter would report them."""
    u1, u9 = hash_user("u1", SALT), hash_user("u9", SALT)
    return [
        {"tenant_id": "acme", "feature_id": "support-bot:chat", "user_id": u1, "provider": "openai",
         "model": "gpt-4o-2024-08-06", "input_tokens": 1000, "output_tokens": 100},
        {"tenant_id": "acme", "feature_id": "support-bot:chat", "user_id": u1, "provider": "openai",
         "model": "gpt-4o", "input_tokens": 2000, "output_tokens": 200, "cached_input_tokens": 1500},
        {"tenant_id": "acme", "feature_id": "support-bot:chat", "user_id": "unknown", "provider": "openai",
         "model": "gpt-4o", "input_tokens": 0, "output_tokens": 0, "status": "error"},
        {"tenant_id": "globex", "feature_id": "search:chat", "user_id": u9, "provider": "anthropic",
         "model": "claude-3-5-haiku-20241022", "input_tokens": 700, "output_tokens": 50},
        {"tenant_id": "globex", "feature_id": "search:embeddings", "user_id": "unknown", "provider": "openai",
         "model": "text-embedding-3-small", "input_tokens": 400, "output_tokens": 0},
    ]


def fields(ev: UsageEvent) -> dict[str, Any]:
    return {name: getattr(ev, name) for name in EVENT_FIELDS}


def as_expected(e: dict[str, Any]) -> dict[str, Any]:
    defaults = {"cached_input_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0, "status": "ok"}
    return {name: {**defaults, **e}[name] for name in EVENT_FIELDS}


def test_both_encodings_give_the_same_events_and_skip_agent_and_tool_spans() -> None:
    spans = mixed_batch()
    t = translator()
    from_proto, bad_p = t(proto_bytes(spans))
    from_json, bad_j = t(json_bytes(spans))
    assert bad_p == bad_j == []
    assert from_proto == from_json
    assert sorted(map(str, map(fields, from_proto))) == sorted(map(str, map(as_expected, expected_events())))
    assert t.counts["not_inference"] == 4  # agent and tool span, in each encoding
    by_model = {e.model: e for e in from_proto}
    assert by_model["gpt-4o-2024-08-06"].environment == "prod"


def test_event_id_is_the_span_and_ts_its_end() -> None:
    svc = Service("bot", **{"tenant.id": "acme"})
    svc.call(chat())
    span = svc.spans()[0]
    [ev], _ = translator()(proto_bytes([span]))
    ctx = span.get_span_context()
    assert ev.event_id == event_id(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert int(ev.ts.timestamp() * 1000) == span.end_time // 1_000_000
    assert ev.latency_ms == (span.end_time - span.start_time) // 1_000_000


def test_totals_equal_the_same_calls_sent_as_usage_events() -> None:
    spans = mixed_batch()
    events, _ = translator()(proto_bytes(spans))
    via_otlp, via_usage = engine(), engine()
    for ev in events:
        via_otlp.process(ev)
    for i, (ev, e) in enumerate(zip(events, expected_events(), strict=True)):
        via_usage.process(UsageEvent(event_id=f"u{i}", ts=ev.ts, **e))
    assert via_otlp.status()["spend"] == via_usage.status()["spend"]
    assert via_otlp.status()["counts"] == via_usage.status()["counts"] == {"new": 5}


def test_a_collector_retry_is_deduplicated() -> None:
    spans = mixed_batch()
    e = engine()
    first, _ = translator()(proto_bytes(spans))
    again, _ = translator()(json_bytes(spans))  # the same batch, re-exported
    assert [e.process(ev) for ev in first].count(Seen.DUPLICATE) == 0
    assert all(e.process(ev) is Seen.DUPLICATE for ev in again)


RECORDED = {  # file -> [(tenant, provider, model, input, output, cached, cache_write, reasoning, status)]
    "semconv_current": [("acme", "anthropic", "claude-sonnet-4-5-20250929", 12500, 420, 10000, 2000, 0, "ok")],
    "openllmetry_legacy": [("globex", "anthropic", "claude-3-5-haiku-20241022", 3300, 250, 3000, 0, 0, "ok")],
    "pydantic_ai": [("initech", "openai", "o4-mini-2025-04-16", 2048, 900, 1024, 0, 640, "ok")],
    "openinference": [("umbrella", "openai", "gpt-4o-mini-2024-07-18", 5000, 300, 4096, 0, 0, "ok"),
                      ("umbrella", "openai", "text-embedding-3-small", 800, 0, 0, 0, 0, "ok")],
    "semconv_older": [("hooli", "openai", "gpt-4o-2024-08-06", 1200, 80, 0, 0, 0, "ok"),
                      ("hooli", "openai", "gpt-4o", 0, 0, 0, 0, 0, "rate_limited")],
    # Gemini's candidates exclude thoughts: reasoning > output is recognised, output = 150 + 600
    "openlit_reasoning": [("acme", "gcp.gemini", "gemini-2.5-flash", 700, 750, 0, 0, 600, "ok")],
}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_recorded_payload_of_each_alias_family(name: str) -> None:
    events, bad = translator()((DATA / f"{name}.json").read_bytes())
    assert bad == []
    got = [(e.tenant_id, e.provider, e.model, e.input_tokens, e.output_tokens, e.cached_input_tokens,
            e.cache_write_tokens, e.reasoning_tokens, e.status) for e in events]
    assert got == RECORDED[name]


def test_recorded_payload_attribution_details() -> None:
    [ev], _ = translator()((DATA / "semconv_current.json").read_bytes())
    assert (ev.feature_id, ev.user_id, ev.environment) == ("support-bot:chat", hash_user("user-42", SALT), "prod")
    [ev], _ = translator()((DATA / "openllmetry_legacy.json").read_bytes())
    assert ev.user_id == hash_user("user-7", SALT)
    ev = translator()((DATA / "semconv_older.json").read_bytes())[0][0]
    assert ev.environment == "prod"  # deployment.environment, the older name


def test_json_variants_numbers_base64_ids_snake_case_unknown_fields() -> None:
    spans = mixed_batch()
    reference, _ = translator()(json_bytes(spans))
    doc = json_doc(spans)

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k in ("startTimeUnixNano", "endTimeUnixNano") or k == "intValue":
                    v = int(v)  # numbers instead of strings
                elif k in ("traceId", "spanId", "parentSpanId"):
                    v = base64.b64encode(bytes.fromhex(v)).decode()  # protobuf's canonical JSON
                out["scope_spans" if k == "scopeSpans" else k] = rewrite(v)
            out["someFutureField"] = {"x": 1}
            return out
        return [rewrite(v) for v in node] if isinstance(node, list) else node

    variant, bad = translator()(b"  " + dumps(rewrite(doc)))
    assert bad == [] and variant == reference


def test_a_malformed_message_is_one_rejection() -> None:
    t = translator()
    for value, reason in ((b"", "empty"), (b"\x0a\xff\xff\xff", "not_otlp"), (b"{not json", "not_otlp"),
                          (b'{"resourceSpans": 3}', "not_otlp"), (b"[1]", "not_otlp"), (b"{}", "not_otlp"),
                          (b"hello world", "not_otlp"), (b"\x68\x01", "not_otlp"),
                          (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"x"}]}]}]}',
                           "not_otlp")):
        good, bad = t(value)
        assert good == [] and [r.reason for r in bad] == [reason], value
        assert bad[0].payload == value


def test_an_unattributed_span_is_dead_lettered_and_the_rest_counted() -> None:
    svc = Service("anon")  # no tenant.id anywhere
    svc.call(chat(**{"gen_ai.usage.input_tokens": 10}))
    other = Service("bot", **{"tenant.id": "acme"})
    other.call(chat())
    good, bad = translator()(proto_bytes(svc.spans() + other.spans()))
    assert [e.tenant_id for e in good] == ["acme"]
    assert [r.reason for r in bad] == ["unattributed"]
    record = loads(bad[0].payload)
    assert record["resource"]["service.name"] == "anon" and record["attributes"]["gen_ai.usage.input_tokens"] == 10


def test_bad_token_counts_and_missing_model_are_rejected_with_a_reason() -> None:
    svc = Service("bot", **{"tenant.id": "acme"})
    svc.call(chat(**{"gen_ai.usage.input_tokens": -5}))
    svc.call({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 5})
    svc.call(chat(**{"gen_ai.usage.output_tokens": 20_000_000}))  # over the contract's bound
    good, bad = translator()(proto_bytes(svc.spans()))
    assert good == [] and [r.reason for r in bad] == ["invalid_span", "invalid_span", "invalid_event"]


def test_tenant_from_a_kafka_header_and_a_feature_attribute() -> None:
    svc = Service("bot")
    svc.call(chat(**{"app.feature": "summarise"}))
    t = translator(tenant="span:tenant.id,header:x-tenant-id", feature="span:app.feature")
    [ev], _ = t(proto_bytes(svc.spans()), [("x-tenant-id", b"initech")])
    assert (ev.tenant_id, ev.feature_id) == ("initech", "summarise")


def test_a_producer_configured_as_cache_miss_only_is_not_under_counted() -> None:
    svc = Service("bot", scope="openlit.instrumentation.anthropic", **{"tenant.id": "acme"})
    svc.call(chat("claude-3-5-haiku-20241022", "anthropic", 5000, 100,
                  **{"gen_ai.usage.cache_read.input_tokens": 1000}))
    [plain], _ = translator()(proto_bytes(svc.spans()))
    [fixed], _ = translator(input_excludes_cache="openlit.instrumentation.anthropic")(proto_bytes(svc.spans()))
    assert (plain.input_tokens, fixed.input_tokens, fixed.cached_input_tokens) == (5000, 6000, 1000)


def test_settings_require_a_salt_and_valid_sources_when_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError) as err:
        Settings(otlp_enabled=True, otlp_tenant_from="tenant.id", topic_otlp="tokenbrake.usage")
    text = str(err.value)
    assert "otlp_user_id_salt" in text and "otlp_tenant_from" in text and "topic_otlp" in text
    s = Settings(otlp_enabled=True, otlp_user_id_salt="x" * 16)
    assert OtlpTranslator.from_settings(s).attribution.tenant[0].name == "tenant.id"
    assert Settings().otlp_enabled is False and Settings().topic_otlp == "otlp_spans"
