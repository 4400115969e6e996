"""Spend, requests, tokens, errors and retries per scope and event-time bucket.

Scopes: tenant, tenant x feature, tenant x user, tenant x model. Buckets: UTC day and
UTC calendar month for every scope; minute buckets for tenant, feature and model scopes
(and users when a rolling user policy needs them), kept only as long as the longest
rolling window needs them. Older buckets are dropped by :meth:`SpendAggregator.expire`,
so state is bounded by the number of active scopes, not by the number of events. An event
later than the minute retention is counted in its day and month but gets no minute bucket
(which would hold a partial total); its (tenant, minute) is listed in ``stale_minutes`` for
the ClickHouse sink to recompute.
"""

from __future__ import annotations

from collections import deque

from streams.aggregate.periods import day_of, minute_of, month_of
from streams.aggregate.store import Store

COST, REQUESTS, INPUT, OUTPUT, CACHED, REASONING, ERRORS, RETRIES = range(8)
WIDTH = 8
FIELDS = ("cost_nanos", "requests", "input_tokens", "output_tokens", "cached_input_tokens",
          "reasoning_tokens", "errors", "retries")


def scope_tenant(tenant: str) -> str:
    return f"t={tenant}"


def scope_feature(tenant: str, feature: str) -> str:
    return f"t={tenant}|f={feature}"


def scope_user(tenant: str, user: str) -> str:
    return f"t={tenant}|u={user}"


def scope_model(tenant: str, model: str) -> str:
    return f"t={tenant}|m={model}"


def day_key(day: int, scope: str) -> str:
    return f"d{day}|{scope}"


def month_key(month: int, scope: str) -> str:
    return f"M{month}|{scope}"


def minute_key(minute: int, scope: str) -> str:
    return f"m{minute}|{scope}"


class SpendAggregator:
    """Counters in a :class:`Store` (persisted) plus per-scope minute indexes (derived)."""

    def __init__(self, store: Store, minute_retention: int, user_minutes: bool = False) -> None:
        self.store = store
        self.minute_retention = minute_retention  # minutes of minute buckets to keep
        self.user_minutes = user_minutes
        self._minutes: deque[tuple[int, str]] = deque()  # (minute, key) in insertion order
        self.floor_minute = 0  # no minute buckets below this one (moved by expire)
        self.stale_minutes: set[tuple[str, int]] = set()  # taken by the sink adapter

    def add(self, tenant: str, feature: str, user: str, model: str, ts_ms: int, partition: int,
            vector: tuple[int, ...]) -> tuple[str, ...]:
        """Add one priced call; returns the four scope strings it counted in."""
        scopes = (scope_tenant(tenant), scope_feature(tenant, feature), scope_user(tenant, user),
                  scope_model(tenant, model))
        day, month, minute = day_of(ts_ms), month_of(ts_ms), minute_of(ts_ms)
        stale = minute < self.floor_minute
        if stale:
            self.stale_minutes.add((tenant, minute))
        for i, scope in enumerate(scopes):
            self._bump(day_key(day, scope), vector, partition)
            self._bump(month_key(month, scope), vector, partition)
            if not stale and (i != 2 or self.user_minutes):
                key = minute_key(minute, scope)
                if key not in self.store:
                    self._minutes.append((minute, key))
                self._bump(key, vector, partition)
        return scopes

    def _bump(self, key: str, vector: tuple[int, ...], partition: int) -> None:
        current = self.store.data.get(key)
        if current is None:
            self.store.set(key, list(vector), partition)
            return
        c0, c1, c2, c3, c4, c5, c6, c7 = vector  # unrolled: this runs ~11 times per event
        current[0] += c0
        current[1] += c1
        current[2] += c2
        current[3] += c3
        current[4] += c4
        current[5] += c5
        current[6] += c6
        current[7] += c7
        self.store.touch(key)

    def get(self, key: str) -> list[int] | None:
        return self.store.data.get(key)

    def minute_cost(self, scope: str, minute: int) -> int:
        vec = self.store.data.get(minute_key(minute, scope))
        return vec[COST] if vec else 0

    def expire(self, now_ms: int) -> int:
        """Drop minute buckets past retention, day buckets older than yesterday and month
        buckets older than last month. Returns how many keys were dropped."""
        dropped = 0
        oldest_minute = minute_of(now_ms) - self.minute_retention
        self.floor_minute = max(self.floor_minute, oldest_minute)
        while self._minutes and self._minutes[0][0] < oldest_minute:
            _, key = self._minutes.popleft()
            if key in self.store:
                self.store.delete(key)
                dropped += 1
        oldest_day, oldest_month = day_of(now_ms) - 1, month_of(now_ms) - 1
        stale = [k for k in self.store.data if (k[0] == "d" and int(k[1:k.index("|")]) < oldest_day)
                 or (k[0] == "M" and int(k[1:k.index("|")]) < oldest_month)]
        for key in stale:
            self.store.delete(key)
        return dropped + len(stale)

    def rebuild_index(self) -> None:
        """Recreate the minute index after :meth:`Store.load`."""
        entries = sorted((int(k[1:k.index("|")]), k) for k in self.store.data if k[0] == "m")
        self._minutes = deque(entries)
