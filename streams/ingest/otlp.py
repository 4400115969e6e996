"""One Kafka message of the OpenTelemetry Collector's ``kafka`` exporter -> flat spans.

The exporter writes one export batch per message: an OTLP ``ExportTraceServiceRequest``
(wire-identical to ``TracesData``) in ``otlp_proto`` (its default) or ``otlp_json``. Which
one is told by the first byte: a protobuf message of this type starts with field 1's tag
(``0x0A``), a JSON one with ``{`` (which is no valid tag here), so no setting is needed.

OTLP/JSON as the Collector writes it: lowerCamelCase keys, trace and span ids in hex,
enums as integers, 64-bit integers (``intValue``, ``*UnixNano``) as strings. Numbers are
accepted for those too, base64 ids (protobuf's canonical JSON) and snake_case keys as
well; unknown fields are ignored. Only what usage needs is kept: ids, times, status,
the span's, its scope's and its resource's attributes (scalars and arrays).

>>> spans = decode_export(b'{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name",'
...     b'"value":{"stringValue":"bot"}}]},"scopeSpans":[{"spans":[{"traceId":"0af7651916cd43dd8448eb211c80319c",'
...     b'"spanId":"b7ad6b7169203331","endTimeUnixNano":"1764000000123000000","status":{"code":2},'
...     b'"attributes":[{"key":"gen_ai.usage.input_tokens","value":{"intValue":"12"}}],"futureField":1}]}]}]}')
>>> s = spans[0]
>>> s.resource["service.name"], s.attributes["gen_ai.usage.input_tokens"], s.end_ns, s.status_code
('bot', 12, 1764000000123000000, 2)
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tokenbrake.schemas.codec import JSONDecodeError, loads

#: OTLP status codes (``Status.code``)
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


class OtlpError(ValueError):
    """The message is not an OTLP trace export (one line, safe to log)."""


@dataclass(frozen=True, slots=True)
class OtlpSpan:
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    name: str
    start_ns: int
    end_ns: int
    status_code: int
    attributes: dict[str, Any] = field(repr=False)
    resource: dict[str, Any] = field(repr=False)
    scope: str = ""  # the instrumentation scope's name (e.g. opentelemetry.instrumentation.openai_v2)

    def record(self) -> dict[str, Any]:
        """The span as a JSON-able dict (the payload of its dead-letter record)."""
        return {"traceId": self.trace_id, "spanId": self.span_id, "name": self.name, "scope": self.scope,
                "startTimeUnixNano": str(self.start_ns), "endTimeUnixNano": str(self.end_ns),
                "status": self.status_code, "attributes": self.attributes, "resource": self.resource}


def is_json(value: bytes) -> bool:
    return value.lstrip()[:1] == b"{"


def decode_export(value: bytes) -> list[OtlpSpan]:
    """Every span of every ``resourceSpans[].scopeSpans[].spans[]``; :class:`OtlpError` when
    the message is neither encoding of a trace export."""
    spans, exports = _from_json(value) if is_json(value) else _from_proto(value)
    if not exports:  # the Collector never sends an empty export; bytes that merely parse (unknown fields) are not one
        raise OtlpError("no resourceSpans: not an OTLP trace export")
    return spans


# -- otlp_proto -------------------------------------------------------------------------------
def _proto_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_proto_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _proto_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def _proto_attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _proto_value(kv.value) for kv in kvs}


def _from_proto(value: bytes) -> tuple[list[OtlpSpan], int]:
    try:
        request = ExportTraceServiceRequest.FromString(value)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise OtlpError(f"neither OTLP JSON nor an OTLP protobuf trace export: {exc}") from None
    spans = []
    for rs in request.resource_spans:
        resource = _proto_attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for s in ss.spans:
                spans.append(OtlpSpan(s.trace_id.hex(), s.span_id.hex(), s.name, s.start_time_unix_nano,
                                      s.end_time_unix_nano, s.status.code, _proto_attrs(s.attributes), resource,
                                      scope))
    return spans, len(request.resource_spans)


# -- otlp_json --------------------------------------------------------------------------------
def _get(obj: Any, camel: str, snake: str | None = None) -> Any:
    if not isinstance(obj, dict):
        return None
    found = obj.get(camel)
    return obj.get(snake) if found is None and snake else found


def _list(obj: Any, camel: str, snake: str | None = None) -> list[Any]:
    found = _get(obj, camel, snake)
    if found is None:
        return []
    if not isinstance(found, list):
        raise OtlpError(f"{camel} is not a list")
    return found


def _int64(raw: Any, what: str) -> int:
    """A 64-bit integer as OTLP/JSON writes it: a decimal string, or a number."""
    if raw is None:
        return 0
    if isinstance(raw, bool):
        raise OtlpError(f"{what} is not an integer")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        try:
            return int(raw)
        except ValueError:
            pass
    raise OtlpError(f"{what} is not an integer: {str(raw)[:40]}")


def _json_value(v: Any) -> Any:
    if not isinstance(v, dict):
        return None
    for key, snake in (("stringValue", "string_value"), ("boolValue", "bool_value"),
                       ("doubleValue", "double_value")):
        found = _get(v, key, snake)
        if found is not None:
            return found
    found = _get(v, "intValue", "int_value")
    if found is not None:
        return _int64(found, "intValue")
    found = _get(v, "arrayValue", "array_value")
    if found is not None:
        return [_json_value(x) for x in _list(found, "values")]
    found = _get(v, "kvlistValue", "kvlist_value")
    if found is not None:
        return _json_attrs(_list(found, "values"))
    found = _get(v, "bytesValue", "bytes_value")
    if found is not None:
        return _id(found, 0, "bytesValue")
    return None


def _json_attrs(kvs: list[Any]) -> dict[str, Any]:
    return {kv["key"]: _json_value(kv.get("value")) for kv in kvs if isinstance(kv, dict) and "key" in kv}


def _id(raw: Any, size: int, what: str) -> str:
    """Hex (OTLP/JSON), or base64 (protobuf's canonical JSON) when it is not hex of ``size`` bytes."""
    if not isinstance(raw, str):
        raise OtlpError(f"{what} is not a string")
    if size and len(raw) == 2 * size:
        try:
            return bytes.fromhex(raw).hex()
        except ValueError:
            pass
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise OtlpError(f"{what} is neither hex nor base64: {raw[:40]}") from None
    if size and len(data) != size:
        raise OtlpError(f"{what} is not {size} bytes: {raw[:40]}")
    return data.hex()


def _status(span: dict[str, Any]) -> int:
    code = _get(_get(span, "status") or {}, "code")
    if code is None:
        return STATUS_UNSET
    if isinstance(code, str) and code in _STATUS_NAMES:
        return _STATUS_NAMES[code]
    return _int64(code, "status.code")


def _from_json(value: bytes) -> tuple[list[OtlpSpan], int]:
    try:
        doc = loads(value)
    except JSONDecodeError as exc:
        raise OtlpError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise OtlpError("an OTLP JSON export is an object")
    spans = []
    try:
        exports = _list(doc, "resourceSpans", "resource_spans")
        for rs in exports:
            resource = _json_attrs(_list(_get(rs, "resource") or {}, "attributes"))
            for ss in _list(rs, "scopeSpans", "scope_spans"):
                scope = _get(_get(ss, "scope") or {}, "name") or ""
                for s in _list(ss, "spans"):
                    spans.append(OtlpSpan(
                        _id(_get(s, "traceId", "trace_id"), 16, "traceId"),
                        _id(_get(s, "spanId", "span_id"), 8, "spanId"),
                        str(_get(s, "name") or ""),
                        _int64(_get(s, "startTimeUnixNano", "start_time_unix_nano"), "startTimeUnixNano"),
                        _int64(_get(s, "endTimeUnixNano", "end_time_unix_nano"), "endTimeUnixNano"),
                        _status(s), _json_attrs(_list(s, "attributes")), resource, str(scope)))
    except (TypeError, AttributeError, KeyError) as exc:
        raise OtlpError(f"not an OTLP trace export: {type(exc).__name__}: {exc}") from None
    return spans, len(exports)
