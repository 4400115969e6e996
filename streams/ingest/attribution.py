"""Who a span's spend belongs to: the attribute mapping of the OTLP input.

OpenTelemetry has no tenant attribute, so each field is read from a list of sources in
the settings, first found wins: ``span:ATTR`` (the span's attribute), ``resource:ATTR``
(the resource's: one per service process), ``header:NAME`` (a header of the Kafka message;
the Collector's kafka exporter copies client metadata there with ``include_metadata_keys``)
or ``const:VALUE``.

>>> sources = parse_sources("span:tenant.id, header:x-tenant, const:acme")
>>> resolve(sources, {}, {}, {"x-tenant": "globex"}), resolve(sources, {"tenant.id": "initech"}, {}, {})
('globex', 'initech')
>>> source_problems("tenant.id")
["'tenant.id': expected span:, resource:, header: or const: before the name"]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tokenbrake.clients.reporter import hash_user

KINDS = ("span", "resource", "header", "const")
#: the user of a span that names none (the per-user totals group them)
UNKNOWN_USER = "unknown"


@dataclass(frozen=True, slots=True)
class Source:
    kind: str  # span, resource, header, const
    name: str


def source_problems(spec: str) -> list[str]:
    problems = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        kind, sep, name = entry.partition(":")
        if not sep or kind not in KINDS or not name:
            problems.append(f"{entry!r}: expected span:, resource:, header: or const: before the name")
    return problems


def parse_sources(spec: str) -> tuple[Source, ...]:
    problems = source_problems(spec)
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(Source(*e.strip().split(":", 1)) for e in spec.split(",") if e.strip())


def headers_dict(headers: Any) -> dict[str, str]:
    """Kafka headers (a list of (key, bytes) pairs, or a mapping) as text."""
    if not headers:
        return {}
    items: Iterable[tuple[str, Any]] = headers.items() if isinstance(headers, Mapping) else headers
    out = {}
    for key, value in items:
        if isinstance(value, bytes | bytearray):
            value = bytes(value).decode("utf-8", "replace")
        out[str(key)] = "" if value is None else str(value)
    return out


def resolve(sources: tuple[Source, ...], span: Mapping[str, Any], resource: Mapping[str, Any],
            headers: Mapping[str, str]) -> str | None:
    for src in sources:
        if src.kind == "const":
            return src.name
        where = span if src.kind == "span" else resource if src.kind == "resource" else headers
        value = where.get(src.name)
        if value is not None and value != "" and not isinstance(value, list | dict):
            return str(value)
    return None


class Attribution:
    """The mapping from settings, applied to one span."""

    def __init__(self, tenant: str, feature: str, user: str, environment: str, session: str,
                 user_salt: bytes) -> None:
        if not user_salt:
            raise ValueError("a user id salt is required: raw user ids are never stored")
        self.tenant, self.feature = parse_sources(tenant), parse_sources(feature)
        self.user, self.environment = parse_sources(user), parse_sources(environment)
        self.session = parse_sources(session)
        self._salt = user_salt

    @classmethod
    def from_settings(cls, settings: Any) -> Attribution:
        salt = settings.otlp_user_id_salt.get_secret_value().encode() if settings.otlp_user_id_salt else b""
        return cls(settings.otlp_tenant_from, settings.otlp_feature_from, settings.otlp_user_from,
                   settings.otlp_environment_from, settings.otlp_session_from, salt)

    def tenant_of(self, span: Mapping[str, Any], resource: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
        return resolve(self.tenant, span, resource, headers)

    def feature_of(self, span: Mapping[str, Any], resource: Mapping[str, Any], headers: Mapping[str, str],
                   operation: str) -> str:
        found = resolve(self.feature, span, resource, headers) if self.feature else None
        if found is None:
            found = f"{resource.get('service.name') or 'unknown_service'}:{operation}"
        return found[:128]

    def user_of(self, span: Mapping[str, Any], resource: Mapping[str, Any], headers: Mapping[str, str]) -> str:
        """The user, hashed as the services' reporter hashes it (``clients.reporter.hash_user``)."""
        found = resolve(self.user, span, resource, headers)
        return UNKNOWN_USER if found is None else hash_user(found, self._salt)

    def environment_of(self, span: Mapping[str, Any], resource: Mapping[str, Any],
                       headers: Mapping[str, str]) -> str | None:
        found = resolve(self.environment, span, resource, headers)
        return None if found is None else found[:64]

    def session_of(self, span: Mapping[str, Any], resource: Mapping[str, Any],
                   headers: Mapping[str, str]) -> str | None:
        found = resolve(self.session, span, resource, headers)
        return None if found is None else found[:128]
