"""The routes file: which alerts go to which receiver, validated with line numbers.

Example::

    flap_window: 10m                           # a resolve waits this long before it is delivered
    routes:
      - id: pd-critical
        match: {severity: critical}            # also rule, tenant, tenant_tier, feature; a list = any of
        pagerduty: {routing_key_env: TB_PD_KEY}
      - id: finops-slack
        match: {rule: [spend_spike, budget]}
        slack: {webhook_url_env: TB_SLACK_URL}
        quiet_hours: {tz: Europe/Berlin, from: "22:00", to: "07:00", except_severity: critical}
      - id: am
        alertmanager: {url: http://alertmanager:9093}
      - id: hook
        webhook: {url_env: TB_HOOK_URL, secret_env: TB_HOOK_SECRET}

Secrets are never in the file: it names environment variables, read once at start-up into
``SecretStr`` (a missing variable is a start-up error naming the route and the variable,
never its value).
"""

from __future__ import annotations

import os
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from tokenbrake.streams.yaml_files import validate_yaml

SEVERITIES = ("info", "warning", "critical")
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Names = Annotated[list[str], BeforeValidator(_listify), Field(min_length=1)]


class Match(BaseModel):
    """Every given field must match; a list matches any of its values; absent = any."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    severity: Annotated[list[Literal["info", "warning", "critical"]], BeforeValidator(_listify)] | None = None
    rule: Names | None = None
    tenant: Names | None = None
    feature: Names | None = None
    tenant_tier: Names | None = None

    def matches(self, rule: str, severity: str, tenant: str, feature: str | None, tier: str | None = None) -> bool:
        """``tenant_tier`` matches only alerts that carry a tier (budgets and per-call caps do;
        detectors judge tenants without knowing their tier)."""
        return ((self.severity is None or severity in self.severity)
                and (self.rule is None or rule in self.rule)
                and (self.tenant is None or tenant in self.tenant)
                and (self.feature is None or (feature is not None and feature in self.feature))
                and (self.tenant_tier is None or (tier is not None and tier in self.tenant_tier)))


class QuietHours(BaseModel):
    """Alerts below ``except_severity`` wait for the end of the quiet hours (and are not sent
    at all if they resolve meanwhile)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    tz: str = "UTC"
    start: str = Field(alias="from", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(alias="to", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    except_severity: Literal["info", "warning", "critical"] | None = "critical"

    @model_validator(mode="after")
    def _zone(self) -> QuietHours:
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"tz: unknown time zone {self.tz!r} (e.g. Europe/Berlin)") from None
        return self

    def holds(self, now_ms: int, severity: str) -> bool:
        """True while an alert of ``severity`` must wait."""
        if self.except_severity is not None and SEVERITIES.index(severity) >= SEVERITIES.index(self.except_severity):
            return False
        local = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(self.tz)).time()
        start, end = time.fromisoformat(self.start), time.fromisoformat(self.end)
        return start <= local < end if start <= end else (local >= start or local < end)


class PagerDutyTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    routing_key_env: str = Field(pattern=ENV_NAME)
    url: str = "https://events.pagerduty.com/v2/enqueue"


class SlackTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook_url_env: str = Field(pattern=ENV_NAME)


class AlertmanagerTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    url_env: str | None = Field(None, pattern=ENV_NAME)

    @model_validator(mode="after")
    def _one(self) -> AlertmanagerTarget:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give url or url_env (one of them)")
        return self


class WebhookTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url_env: str = Field(pattern=ENV_NAME)
    secret_env: str = Field(pattern=ENV_NAME)


KINDS = ("pagerduty", "slack", "alertmanager", "webhook")
#: receivers' documented limits: PagerDuty about 120 events/min per routing key, Slack 1 message/s
DEFAULT_RATE_PER_MINUTE = {"pagerduty": 120, "slack": 60, "alertmanager": 600, "webhook": 600}


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    match: Match = Match()
    quiet_hours: QuietHours | None = None
    pagerduty: PagerDutyTarget | None = None
    slack: SlackTarget | None = None
    alertmanager: AlertmanagerTarget | None = None
    webhook: WebhookTarget | None = None
    rate_per_minute: int | None = Field(None, ge=1, le=6000)
    timeout_s: float = Field(5.0, gt=0, le=60)
    max_attempts: int = Field(6, ge=1, le=20)

    @model_validator(mode="after")
    def _one_receiver(self) -> Route:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a route has exactly one receiver of {', '.join(KINDS)} (got {len(given)})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def target(self) -> Any:
        return getattr(self, self.kind)

    @property
    def per_minute(self) -> int:
        return self.rate_per_minute or DEFAULT_RATE_PER_MINUTE[self.kind]

    def env_names(self) -> dict[str, str]:
        """{what: environment variable} this route reads its secrets from."""
        t = self.target
        names = {"pagerduty": {"routing_key": getattr(t, "routing_key_env", "")},
                 "slack": {"url": getattr(t, "webhook_url_env", "")},
                 "alertmanager": {"url": getattr(t, "url_env", None) or ""},
                 "webhook": {"url": getattr(t, "url_env", ""), "secret": getattr(t, "secret_env", "")}}[self.kind]
        return {k: v for k, v in names.items() if v}


class RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flap_window: str = Field("10m", pattern=r"^\d+(s|m|h)$")
    routes: list[Route] = []

    @model_validator(mode="after")
    def _whole(self) -> RoutesFile:
        ids = [r.id for r in self.routes]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"route ids must be unique: {', '.join(dupes)}")
        return self

    @property
    def flap_window_ms(self) -> int:
        return int(self.flap_window[:-1]) * {"s": 1000, "m": 60_000, "h": 3_600_000}[self.flap_window[-1]]

    def route(self, route_id: str) -> Route:
        for r in self.routes:
            if r.id == route_id:
                return r
        raise KeyError(f"no route {route_id!r} in the routes file (routes: {', '.join(r.id for r in self.routes)})")


class RoutesError(ValueError):
    """The routes file is invalid; the message names each bad line and field."""


class Secrets:
    """A route's secrets and URLs, read from the environment; ``repr`` shows none of them."""

    __slots__ = ("values",)

    def __init__(self, values: dict[str, SecretStr]) -> None:
        self.values = values

    def get(self, name: str) -> str:
        return self.values[name].get_secret_value()

    def __repr__(self) -> str:
        return f"Secrets({sorted(self.values)})"


def read_secrets(routes: RoutesFile, environ: dict[str, str] | None = None) -> dict[str, Secrets]:
    """{route id: Secrets}; every missing variable reported at once, by name only."""
    env = os.environ if environ is None else environ
    found, missing = {}, []
    for r in routes.routes:
        values = {}
        for what, var in r.env_names().items():
            if not env.get(var):
                missing.append(f"route {r.id}: environment variable {var} ({what}) is not set")
            else:
                values[what] = SecretStr(env[var])
        if r.alertmanager is not None and r.alertmanager.url:
            values["url"] = SecretStr(r.alertmanager.url)
        if r.pagerduty is not None:
            values["url"] = SecretStr(r.pagerduty.url)
        found[r.id] = Secrets(values)
    if missing:
        raise RoutesError("routes file secrets:\n  " + "\n  ".join(missing))
    return found


def parse_routes(text: str, source: str = "<routes>") -> RoutesFile:
    try:
        return validate_yaml(text, RoutesFile, source, RoutesError, "routes")
    except RoutesError:
        raise
    except ValueError as exc:
        raise RoutesError(f"{source}: {exc}") from None


def load_routes(path: Path | None) -> RoutesFile:
    if path is None:
        return RoutesFile()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise RoutesError(f"cannot read routes file {path}: {exc}") from exc
    return parse_routes(text, str(path))
