"""OutcomeEvent: a business result (a resolved ticket, a merged PR, an extracted page) and
the LLM calls that produced it, published on ``tokenbrake.outcomes``.

It links to its calls by ``logical_call_ids`` (the ``logical_call_id`` of each call, or the
``event_id`` when the call had none) and/or by ``session_id`` (the ``session_id`` of the
usage events of a conversation or workflow run). Calls linked to no outcome are attributed
by the rule in :mod:`streams.finops.outcomes`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from tokenbrake.schemas.common import Id, Timestamp, no_float
from tokenbrake.schemas.usage import ScopeId

#: a value may be negative (a refund) but is a decimal string, never a float
Value = Annotated[Decimal, BeforeValidator(no_float), Field(gt=Decimal(-10**9), lt=Decimal(10**9), decimal_places=9)]
Kind = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class OutcomeEvent(BaseModel):
    """One business outcome."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome_id: Id
    ts: Timestamp
    tenant_id: ScopeId
    feature_id: ScopeId
    user_id: ScopeId | None = None  # hashed by the reporter, like usage events
    kind: Kind  # ticket_resolved, pr_merged, page_extracted, ...
    value: Value | None = None  # revenue or cost saved, USD
    quality: Annotated[float, Field(ge=0, le=1)] | None = None
    logical_call_ids: Annotated[list[Id], Field(max_length=1000)] = []
    session_id: Id | None = None

    @model_validator(mode="after")
    def _value_is_finite(self) -> OutcomeEvent:
        if self.value is not None and not self.value.is_finite():
            raise ValueError("value must be a finite decimal")
        return self
