"""An OTLP trace export (one Kafka message) -> UsageEvents, and a reason for what cannot be one.

Per span (see :mod:`streams.ingest.otlp` for the wire, :mod:`streams.ingest.genai` for the
GenAI attributes, :mod:`streams.ingest.attribution` for who pays):
  - not an inference span (agent, workflow, tool, unknown): skipped, counted;
  - an inference span without usage: skipped unless its status is ERROR (a failed attempt,
    counted with zero tokens, as the reporter's services report one);
  - otherwise one UsageEvent: ``event_id`` derived from (traceId, spanId) only, so the
    Collector's retries and a re-read message deduplicate; ``ts`` = the span's end;
    ``latency_ms`` = its duration; status ERROR = ``status`` "error" (or ``timeout`` /
    ``rate_limited`` when ``error.type`` says so);
  - no tenant found, bad token counts, no model, or a value the contract refuses: one
    :class:`Rejected` (dead-letter topic) with the span as JSON.
A message that is not a trace export is one Rejected with its bytes. Nothing raises.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from pydantic import ValidationError

from tokenbrake.schemas.codec import dumps
from tokenbrake.schemas.usage import UsageEvent
from tokenbrake.streams.ingest.attribution import Attribution, headers_dict
from tokenbrake.streams.ingest.decode import MAX_MESSAGE_BYTES, Rejected
from tokenbrake.streams.ingest.genai import ProducerMatch, SpanError, model_of, operation, provider_of, usage
from tokenbrake.streams.ingest.otlp import STATUS_ERROR, OtlpError, OtlpSpan, decode_export

#: optional UsageEvent fields filled when the contract has them (session_id is newer than the OTLP input)
_HAS_SESSION = "session_id" in UsageEvent.model_fields


def event_id(trace_id: str, span_id: str) -> str:
    """Stable per span: the same span exported twice is the same event.

    >>> event_id("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    'otel-e2681862d99e287fc991ca7edf58cbce'
    """
    digest = hashlib.sha256(bytes.fromhex(trace_id) + bytes.fromhex(span_id)).hexdigest()
    return f"otel-{digest[:32]}"


class _Refused(Exception):
    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason, self.error = reason, error


def _status(span: OtlpSpan) -> str:
    if span.status_code != STATUS_ERROR:
        return "ok"
    kind = str(span.attributes.get("error.type") or "").lower()
    if "timeout" in kind or "timedout" in kind:
        return "timeout"
    if "429" in kind or "ratelimit" in kind.replace("_", "") or "rate limit" in kind:
        return "rate_limited"
    return "error"


class OtlpTranslator:
    """``translator(value, headers) -> (events, rejections)`` for one Kafka message.
    ``counts`` (read by the metrics endpoint): spans by outcome."""

    def __init__(self, attribution: Attribution, input_excludes_cache: str = "",
                 output_excludes_reasoning: str = "") -> None:
        self.attribution = attribution
        self.input_excludes_cache = ProducerMatch(input_excludes_cache)
        self.output_excludes_reasoning = ProducerMatch(output_excludes_reasoning)
        self.counts: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, settings: Any) -> OtlpTranslator:
        return cls(Attribution.from_settings(settings), settings.otlp_input_excludes_cache,
                   settings.otlp_output_excludes_reasoning)

    def __call__(self, value: bytes | None, headers: Any = None) -> tuple[list[UsageEvent], list[Rejected]]:
        if not value:
            return [], [Rejected("empty", "empty message value", value or b"")]
        if len(value) > MAX_MESSAGE_BYTES:
            return [], [Rejected("too_large", f"message of {len(value)} bytes exceeds {MAX_MESSAGE_BYTES}", value)]
        try:
            spans = decode_export(value)
        except OtlpError as exc:
            return [], [Rejected("not_otlp", str(exc), value)]
        found = headers_dict(headers)
        good: list[UsageEvent] = []
        bad: list[Rejected] = []
        for span in spans:
            self.counts["spans"] += 1
            try:
                event = self.event(span, found)
            except _Refused as exc:
                self.counts["rejected"] += 1
                bad.append(Rejected(exc.reason, exc.error, dumps(span.record())))
                continue
            except ValidationError as exc:
                self.counts["rejected"] += 1
                bad.append(Rejected("invalid_event", f"span {span.span_id}: {_explain(exc)}", dumps(span.record())))
                continue
            if event is not None:
                self.counts["counted"] += 1
                good.append(event)
        return good, bad

    def event(self, span: OtlpSpan, headers: dict[str, str]) -> UsageEvent | None:
        """The span's UsageEvent; None when it is not one to count (see the module doc)."""
        attrs, resource = span.attributes, span.resource
        op = operation(attrs)
        if op is None:
            self.counts["not_inference"] += 1
            return None
        provider = provider_of(attrs)
        scope = span.scope
        try:
            used = usage(attrs, self.input_excludes_cache(scope, provider),
                         self.output_excludes_reasoning(scope, provider))
        except SpanError as exc:
            raise _Refused("invalid_span", f"span {span.span_id}: {exc}") from None
        if used is None and span.status_code != STATUS_ERROR:
            self.counts["no_usage"] += 1
            return None
        tenant = self.attribution.tenant_of(attrs, resource, headers)
        if tenant is None:
            raise _Refused("unattributed", f"span {span.span_id} of service {resource.get('service.name')!r}: no "
                           "tenant in any of TOKENBRAKE_OTLP_TENANT_FROM's sources")
        model = model_of(attrs)
        if model is None:
            raise _Refused("invalid_span", f"span {span.span_id}: no model (gen_ai.response.model, "
                           "gen_ai.request.model, llm.model_name)")
        if len(span.trace_id) != 32 or len(span.span_id) != 16:
            raise _Refused("invalid_span", f"span {span.name!r}: trace or span id missing")
        fields: dict[str, Any] = {}
        if _HAS_SESSION:
            fields["session_id"] = self.attribution.session_of(attrs, resource, headers)
        duration_ms = (span.end_ns - span.start_ns) // 1_000_000
        return UsageEvent(
            event_id=event_id(span.trace_id, span.span_id), ts=span.end_ns // 1_000_000, tenant_id=tenant,
            feature_id=self.attribution.feature_of(attrs, resource, headers, op),
            user_id=self.attribution.user_of(attrs, resource, headers), provider=provider or "unknown",
            model=model, environment=self.attribution.environment_of(attrs, resource, headers),
            region=_region(resource), input_tokens=used.input_tokens if used else 0,
            output_tokens=used.output_tokens if used else 0,
            cached_input_tokens=used.cached_input_tokens if used else 0,
            cache_write_tokens=used.cache_write_tokens if used else 0,
            reasoning_tokens=used.reasoning_tokens if used else 0, status=_status(span),
            latency_ms=duration_ms if 0 <= duration_ms <= 86_400_000 else None, **fields)


def _region(resource: dict[str, Any]) -> str | None:
    found = resource.get("cloud.region")
    return str(found)[:64] if found else None


def _explain(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc']) or '(event)'}: {err['msg']}"
