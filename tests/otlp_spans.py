"""Spans made with the OpenTelemetry Python SDK, serialised as the Collector's kafka exporter
writes them: ``otlp_proto`` (the ExportTraceServiceRequest bytes) and ``otlp_json`` (OTLP/JSON:
lowerCamelCase keys, hex ids, integer enums, 64-bit integers as strings)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from tokenbrake.schemas.codec import dumps


class Service:
    """One instrumented service process (its resource), recording spans in memory."""

    def __init__(self, name: str, scope: str = "opentelemetry.instrumentation.openai_v2", **resource: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": name, **resource}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer(scope)

    def call(self, attrs: dict[str, Any], error: bool = False, name: str = "chat gpt-4o") -> None:
        with self.tracer.start_as_current_span(name, attributes=attrs) as span:
            if error:
                span.set_status(Status(StatusCode.ERROR, "provider failed"))

    @contextmanager
    def agent(self, attrs: dict[str, Any]) -> Iterator[None]:
        """An agent span around the calls made inside the block (the parent of their spans)."""
        with self.tracer.start_as_current_span("invoke_agent support", attributes=attrs):
            yield

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


def chat(model: str = "gpt-4o", provider: str = "openai", inp: int = 1000, out: int = 100,
         **extra: Any) -> dict[str, Any]:
    """Attributes of a chat span in the current GenAI semantic conventions."""
    return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": out, **extra}


def proto_bytes(spans: list[ReadableSpan]) -> bytes:
    """otlp_proto: what the exporter sends by default."""
    return encode_spans(spans).SerializeToString()


def _hex_ids(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: (base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") else _hex_ids(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


def json_doc(spans: list[ReadableSpan]) -> dict[str, Any]:
    """otlp_json as a dict: protobuf's JSON mapping with OTLP's changes (hex ids, integer enums)."""
    return _hex_ids(MessageToDict(encode_spans(spans), use_integers_for_enums=True))


def json_bytes(spans: list[ReadableSpan]) -> bytes:
    return dumps(json_doc(spans))
