"""UsageEvent: one per LLM call attempt, published by services on ``tokenbrake.usage``."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tokenbrake.schemas.common import Id, Timestamp, Usd

#: Upper bound on any token count of one call: larger is a bug, not a call.
MAX_TOKENS = 10_000_000
#: Upper bound on the cost a service reports for one call, likewise (ClickHouse stores money
#: as Decimal(18, 9): an amount of a billion dollars would fail every insert of its batch).
MAX_CALL_USD = Decimal(1_000_000)

Tokens = Annotated[int, Field(ge=0, le=MAX_TOKENS, strict=True)]
Label = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
#: An id the spend is aggregated by (tenant, feature, user, model): also no ``|``, the
#: separator of the aggregate keys, so two scopes can never share a key.
ScopeId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f|]+$")]

#: Known statuses; any lowercase identifier is accepted so new ones need no schema change.
KNOWN_STATUSES = ("ok", "error", "timeout", "rate_limited", "cancelled", "content_filter")


class UsageEvent(BaseModel):
    """One LLM call attempt.

    Token conventions (what the reporter's helpers produce):
    ``input_tokens`` counts every prompt token, *including* ``cached_input_tokens`` and
    ``cache_write_tokens``; ``output_tokens`` counts every generated token, *including*
    ``reasoning_tokens``. Each token is priced exactly once.
    """

    # A field this contract does not know is accepted and ignored (kept in ``model_extra``, never
    # stored or priced); the worker counts such events (``unknown_fields``) and names the fields in a
    # warning. A producer rolling out a new field before the worker knows it must not have its
    # spend dead-lettered: uncounted spend is the failure a spend control cannot afford.
    model_config = ConfigDict(frozen=True, extra="allow")

    event_id: Id
    ts: Timestamp
    tenant_id: ScopeId
    feature_id: ScopeId
    user_id: ScopeId
    provider: Label
    model: ScopeId
    #: the model the service asked for, when a downgrade control made it call ``model`` instead
    #: (``decision.model(requested)``): what the downgrade saved is priced from it
    requested_model: ScopeId | None = None
    model_version: Id | None = None
    environment: Label | None = None
    region: Label | None = None
    prompt_version: Label | None = None
    tenant_tier: Label | None = None
    input_tokens: Tokens
    output_tokens: Tokens
    cached_input_tokens: Tokens = 0
    cache_write_tokens: Tokens = 0
    reasoning_tokens: Tokens = 0
    logical_call_id: Id | None = None
    session_id: Id | None = None  # a conversation or workflow run: outcomes may link to it
    attempt: Annotated[int, Field(ge=0, le=1000, strict=True)] = 0
    status: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = "ok"
    latency_ms: Annotated[int, Field(ge=0, le=86_400_000, strict=True)] | None = None
    cache_hit: bool = False
    reported_cost_usd: Annotated[Usd, Field(le=MAX_CALL_USD)] | None = None

    @model_validator(mode="after")
    def _token_parts_fit(self) -> UsageEvent:
        if self.cached_input_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError(
                "cached_input_tokens + cache_write_tokens exceed input_tokens "
                "(input_tokens must include cached tokens)"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError("reasoning_tokens exceed output_tokens (output_tokens must include them)")
        return self

    @property
    def call_id(self) -> str:
        """The logical call this attempt belongs to (the event itself when not given)."""
        return self.logical_call_id or self.event_id
