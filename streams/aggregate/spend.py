"""Spend, requests, tokens, errors and retries per scope and event-time bucket.

Scopes: tenant, tenant x feature, tenant x user, tenant x model. Buckets: UTC day for every
scope and UTC calendar month for every scope but users; minute buckets for tenant, feature
and model scopes, kept only as long as the longest rolling window needs them. A user's
month bucket is kept only when a budget per user and month reads it (``user_months``), and
a user's minute buckets only when a rolling user budget does (``user_minutes``): with
100,000 users almost every event opens a user's buckets, and each one is a key to hold and
a changelog record to write. Older buckets are dropped by :meth:`SpendAggregator.expire`,
so state is bounded by the number of active scopes, not by the number of events. An event
later than the minute retention is counted in its day and month but gets no minute bucket
(which would hold a partial total); its (tenant, minute) is listed in ``stale_minutes`` for
the ClickHouse sink to recompute.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from tokenbrake.streams.aggregate.periods import MINUTE_MS, day_of, minute_of, month_of, month_of_day
from tokenbrake.streams.state.keys import (
    DAY,
    MONTH,
    bucket_keys,
    bucket_kind,
    bucket_number,
    day_key,
    is_user_scope,
    minute_key,
    month_key,
    scope_feature,
    scope_model,
    scope_tenant,
    scope_user,
)
from tokenbrake.streams.state.records import SpendTotals
from tokenbrake.streams.state.store import POS, Store, add_into

COST, REQUESTS, INPUT, OUTPUT, CACHED, REASONING, ERRORS, RETRIES = range(8)
FIELDS = SpendTotals.FIELDS  # the persisted record names them


class SpendAggregator:
    """Counters in a :class:`Store` (persisted) plus per-scope minute indexes (derived)."""

    def __init__(self, store: Store, minute_retention: int, user_minutes: bool = False,
                 user_months: bool = True) -> None:
        self.store = store
        self.minute_retention = minute_retention  # minutes of minute buckets to keep
        self.user_minutes = user_minutes
        self.user_months = user_months
        self._minutes: deque[tuple[int, str]] = deque()  # (minute, key) in insertion order
        self._days: deque[tuple[int, str]] = deque()  # (day, key) of day keys, likewise
        self._months: deque[tuple[int, str]] = deque()  # (month, key) of month keys, likewise
        self.floor_minute = 0  # no minute buckets below this one (moved by expire)
        self.stale_minutes: set[tuple[str, int]] = set()  # taken by the sink adapter
        self._cache: dict[tuple[str, str, str, int], list[Any]] = {}  # see add()
        self._cache_epoch = -1
        self._month_of_day: dict[int, int] = {}

    def add(self, tenant: str, feature: str, user: str, model: str, ts_ms: int, partition: int,
            vector: tuple[int, ...], pos: int = -1) -> None:
        """Add one priced call to its day, month and minute buckets in every scope; ``pos`` is
        its position in its partition (see :data:`streams.state.store.POS`).

        The tenant, feature and model buckets of one (tenant, feature, model, minute) are
        shared by many events: their counter lists are looked up once (again only when
        :attr:`Store.epoch` moves: a bucket dropped or replaced), added to in place, and
        their keys marked changed again after each :meth:`Store.changes`. User buckets are
        mostly one or two events each, so they go straight through :meth:`Store.add_counters`."""
        minute = ts_ms // MINUTE_MS
        store = self.store
        if self._cache_epoch != store.epoch or len(self._cache) > 100_000:
            self._cache.clear()
            self._cache_epoch = store.epoch
        entry = self._cache.get((tenant, feature, model, minute))
        if entry is None:
            entry = self._shared(tenant, feature, model, minute, partition)
        elif entry[2] != store.marks:  # the last changes() took the marks: mark the keys again
            store.mark(entry[1], partition)
            entry[2] = store.marks
        add_into(entry[0], vector, pos)
        day = minute // 1440
        month = self._month_of_day.get(day)
        if month is None:
            month = self._month_of_day[day] = month_of_day(day)
        user_scope = scope_user(tenant, user)
        keys = [day_key(day, user_scope), month_key(month, user_scope)] if self.user_months \
            else [day_key(day, user_scope)]
        with_minute = self.user_minutes and minute >= self.floor_minute
        if with_minute:
            keys.append(minute_key(minute, user_scope))
        created = store.add_counters(keys, vector, partition, pos)
        if created:
            self._index_created(created, day, month, minute)
        if minute < self.floor_minute:
            self.stale_minutes.add((tenant, minute))

    def add_missing(self, tenant: str, feature: str, user: str, model: str, ts_ms: int, partition: int,
                    vector: tuple[int, ...], pos: int) -> None:
        """:meth:`add` for an event re-read after a restart: each bucket takes it only if its
        position is below ``pos`` (the event did not reach that bucket's persisted total).
        Slower (every key looked up and compared), used only on the re-read window."""
        minute = ts_ms // MINUTE_MS
        day = minute // 1440
        month = month_of_day(day)
        scopes = [scope_tenant(tenant), scope_feature(tenant, feature), scope_model(tenant, model)]
        user_scope = scope_user(tenant, user)
        keys = bucket_keys((*scopes, user_scope) if self.user_months else scopes, day, month, None)
        if not self.user_months:
            keys.append(day_key(day, user_scope))
        if minute >= self.floor_minute:
            keys += [minute_key(minute, s) for s in scopes]
            if self.user_minutes:
                keys.append(minute_key(minute, user_scope))
        else:
            self.stale_minutes.add((tenant, minute))
        created = self.store.add_missing(keys, vector, partition, pos)
        for key in created:
            self._index_created([key], day, month, minute)

    def positions(self) -> dict[int, int]:
        """The highest position found in each partition's buckets: events at or below it may
        already be counted (see :meth:`add_missing`)."""
        top: dict[int, int] = {}
        owner = self.store.partition_of
        for key, vec in self.store.data.items():
            if vec[POS] >= 0:
                part = owner(key)
                if vec[POS] > top.get(part, -1):
                    top[part] = vec[POS]
        return top

    def _shared(self, tenant: str, feature: str, model: str, minute: int, partition: int) -> list[Any]:
        """[counter lists, keys, marks] of the tenant, feature and model scopes for one minute
        (its day and month too), created and indexed when absent, cached until the store's
        epoch moves."""
        scopes = (scope_tenant(tenant), scope_feature(tenant, feature), scope_model(tenant, model))
        day = minute // 1440
        month = month_of_day(day)
        # later than the retention: no (partial) minute bucket
        keys = bucket_keys(scopes, day, month, minute if minute >= self.floor_minute else None)
        lists, created = self.store.counters(keys, partition)
        if created:
            self._index_created(created, day, month, minute)
        entry = self._cache[(tenant, feature, model, minute)] = [lists, keys, self.store.marks]
        return entry

    def _index_created(self, created: list[str], day: int, month: int, minute: int) -> None:
        for key in created:
            kind = bucket_kind(key)
            if kind == DAY:
                self._days.append((day, key))
            elif kind == MONTH:
                self._months.append((month, key))
            else:
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
        self._cache.clear()  # the floor moves: no cached minute list below it
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

    def drop_user_months(self) -> int:
        """Delete the user month buckets an earlier run kept (a budget per user and month it
        had, or an earlier release): without such a budget nothing updates them, and a later
        one must find none, not stale totals (see :meth:`user_months_begin_mid_month`).
        Returns how many were deleted."""
        stale = [key for key in self.store.data if key[0] == MONTH and is_user_scope(key)]
        for key in stale:
            self.store.delete(key)
        if stale:
            self._months = deque(item for item in self._months if item[1] in self.store)
        return len(stale)

    def user_months_begin_mid_month(self, now_ms: int) -> set[int]:
        """The partitions whose users already spent this month although no user month bucket
        of it is held (the users' month totals start now: a budget per user and month added
        mid-month counts from now, not from the 1st); empty when the month's totals are whole."""
        month = month_of(now_ms)
        spent: set[int] = set()
        for key in self.store.data:
            if not is_user_scope(key):
                continue
            kind = key[0]
            if kind == MONTH and bucket_number(key) == month:
                return set()
            if kind == DAY and month_of_day(bucket_number(key)) == month:
                spent.add(self.store.partition_of(key))
        return spent

    def rebuild_index(self) -> None:
        """Recreate the bucket indexes after :meth:`Store.load` (or a restore)."""
        self._cache.clear()
        indexes: dict[str, list[tuple[int, str]]] = {"m": [], "d": [], "M": []}
        for key in self.store.data:
            indexes[bucket_kind(key)].append((bucket_number(key), key))
        self._minutes, self._days, self._months = (deque(sorted(indexes[k])) for k in ("m", "d", "M"))
