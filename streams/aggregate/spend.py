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

from streams.aggregate.periods import DAY_MS, MINUTE_MS, day_of, minute_of, month_of, month_of_day
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
        self._days: deque[tuple[int, str]] = deque()  # (day, key) of day keys, likewise
        self._months: deque[tuple[int, str]] = deque()  # (month, key) of month keys, likewise
        self.floor_minute = 0  # no minute buckets below this one (moved by expire)
        self.stale_minutes: set[tuple[str, int]] = set()  # taken by the sink adapter

    def add(self, tenant: str, feature: str, user: str, model: str, ts_ms: int, partition: int,
            vector: tuple[int, ...]) -> None:
        """Add one priced call to its day, month and minute buckets in every scope."""
        scopes = (scope_tenant(tenant), scope_feature(tenant, feature), scope_user(tenant, user),
                  scope_model(tenant, model))
        day, minute = ts_ms // DAY_MS, ts_ms // MINUTE_MS
        store = self.store
        month = month_of_day(day)
        day_prefix, month_prefix = f"d{day}|", f"M{month}|"
        for key in store.add_counters([day_prefix + s for s in scopes], vector, partition):
            self._days.append((day, key))
        for key in store.add_counters([month_prefix + s for s in scopes], vector, partition):
            self._months.append((month, key))
        if minute < self.floor_minute:
            self.stale_minutes.add((tenant, minute))
            return
        minute_prefix = f"m{minute}|"
        minute_keys = [minute_prefix + s for s in scopes] if self.user_minutes else \
            [minute_prefix + scopes[0], minute_prefix + scopes[1], minute_prefix + scopes[3]]
        for key in store.add_counters(minute_keys, vector, partition):
            self._minutes.append((minute, key))

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
        for index, oldest in ((self._days, oldest_day), (self._months, oldest_month)):
            while index and index[0][0] < oldest:
                _, key = index.popleft()
                if key in self.store:
                    self.store.delete(key)
                    dropped += 1
        return dropped

    def rebuild_index(self) -> None:
        """Recreate the bucket indexes after :meth:`Store.load` (or a restore)."""
        indexes: dict[str, list[tuple[int, str]]] = {"m": [], "d": [], "M": []}
        for key in self.store.data:
            indexes[key[0]].append((int(key[1:key.index("|")]), key))
        self._minutes, self._days, self._months = (deque(sorted(indexes[k])) for k in ("m", "d", "M"))
