"""The event-time buckets detectors are scored on, and what a closed one hands a detector.

A bucket counts the calls of one time slot (``size_ms``) per scope. When the watermark passes
its end, the detector hub (``streams/decide/detection.py``) closes it and calls, in the
registry's order, the ``features_of`` of each detector scored on it: a function declared beside
the detector's class, which turns the closed counters into the feature dicts the detector scores.

The hub fills the built-in buckets below inline, in one pass per event (no call per bucket: it is
the hot path); ``layout`` says what one scope's counters hold. A detector needing other counters
declares its own bucket with an ``add`` function, which the hub calls once per event.

>>> errors = Bucket("errors_minute", MINUTE_MS, "(tenant,) -> [requests, errors]", add=lambda c, *call: None)
>>> errors.builtin, CALLS_MINUTE.builtin
(False, True)
>>> [bucket.period for bucket in BUILTIN]
['1m', '1h', '1h', '1h', '10m']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

MINUTE_MS = 60_000
HOUR_MS = 3_600_000

#: what one closed bucket yields per scope it judges: (scope, features, observed value for the alert)
Judged = tuple[tuple, dict[str, Any], Decimal]
#: ``add(counters, tenant, feature, user, model, cost_nanos, input_tokens, retry, error, cached_tokens)``:
#: adds one call to the open bucket's ``counters`` (scope -> counters, created by ``add`` as it needs)
Add = Callable[[dict[tuple, Any], str, str, str, str, int, int, bool, bool, int], None]


@dataclass(frozen=True, slots=True)
class Bucket:
    """One kind of bucket: its name (the key of its open buckets in the hub), its size, what
    one scope's counters hold, and for a bucket the hub does not fill itself, ``add``."""

    name: str
    size_ms: int
    layout: str
    add: Add | None = None

    @property
    def builtin(self) -> bool:
        return self.add is None

    @property
    def period(self) -> str:
        """The size as a control reason's period: ``"1m"``, ``"10m"``, ``"1h"``."""
        if self.size_ms % HOUR_MS == 0:
            return f"{self.size_ms // HOUR_MS}h"
        return f"{self.size_ms // MINUTE_MS}m" if self.size_ms % MINUTE_MS == 0 else f"{self.size_ms // 1000}s"


@dataclass(frozen=True, slots=True)
class Closed:
    """One closed bucket as ``features_of`` sees it: its start and end (the alerts' time), its
    counters (scope -> counters, as the bucket's layout says), and what the hub keeps beside it
    (see the built-in buckets; ``None`` for the others)."""

    start: int
    end: int
    counters: dict[tuple, Any]
    beside: Any = None


#: ``features_of(closed, memory)``: the feature dicts a detector scores on one closed bucket.
#: ``memory`` is the rule's own dict, kept by the hub from one closed bucket to the next.
FeaturesOf = Callable[[Closed, dict], Iterator[Judged]]


def nanos_to_usd(nanos: int) -> Decimal:
    """An alert's observed amount in USD, exactly (as ``streams.price.rates.nanos_to_usd``)."""
    return Decimal(nanos).scaleb(-9)


CALLS_MINUTE = Bucket(
    "calls_minute", MINUTE_MS,
    "(tenant, feature, model) -> [requests, retries, errors, cost nanos]; beside it, the closed minute's "
    "sample of call costs per (tenant, feature): {(tenant, feature): [cost nanos, ...]}")
TOKENS_HOUR = Bucket("tokens_hour", HOUR_MS,
                     "(tenant, feature) -> [requests, input tokens, sample of input tokens per call]")
SPEND_HOUR = Bucket("spend_hour", HOUR_MS, "(tenant,) and (tenant, feature) -> [spend nanos]")
TENANTS_HOUR = Bucket("tenants_hour", HOUR_MS,
                      "(tenant,) -> [0], the tenants seen in the hour; beside it, today's (UTC) spend "
                      "per tenant per user: {tenant: {user: spend nanos}}")
CACHE_10_MINUTES = Bucket("cache_10_minutes", 10 * MINUTE_MS,
                          "(tenant, feature) -> [requests, calls with cached tokens, input tokens, "
                          "cached input tokens]")
#: the buckets the hub fills inline, per event
BUILTIN = (CALLS_MINUTE, TOKENS_HOUR, SPEND_HOUR, TENANTS_HOUR, CACHE_10_MINUTES)
