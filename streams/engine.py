"""The pure core, shared by the live worker and the offline backtest.

ingest (dedupe) -> price -> aggregate -> decide (budgets, caps, detectors) -> emit.
No Kafka, no ClickHouse, no clock of its own: the caller passes events in order, calls
:meth:`Engine.tick` now and then, and takes what was decided with :meth:`Engine.drain`.
State lives in three :class:`Store` objects that the Faust adapter mirrors into tables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tokenbrake.schemas.control import ControlEvent, Scope
from tokenbrake.schemas.outcome import OutcomeEvent
from tokenbrake.schemas.signing import Sealer
from tokenbrake.schemas.usage import UsageEvent
from tokenbrake.streams.aggregate.periods import day_of, minute_of, month_of
from tokenbrake.streams.aggregate.spend import COST, FIELDS, SpendAggregator
from tokenbrake.streams.decide.baselines import BaselineKeeper
from tokenbrake.streams.decide.board import ControlBoard
from tokenbrake.streams.decide.budgets import BudgetEvaluator
from tokenbrake.streams.decide.caps import RequestCostCaps, UnpricedModels
from tokenbrake.streams.decide.detection import DetectorHub
from tokenbrake.streams.decide.overrides import OperatorOverrides
from tokenbrake.streams.decide.policies import PoliciesFile
from tokenbrake.streams.decide.unit_costs import UnitCostEvaluator
from tokenbrake.streams.emit.events import Emitted
from tokenbrake.streams.ingest.dedupe import Deduper, Seen
from tokenbrake.streams.price.pricebook import PriceBook
from tokenbrake.streams.price.rates import nanos_to_usd
from tokenbrake.streams.state.keys import (
    DAY,
    USER_MONTHS,
    day_key,
    is_user_scope,
    month_key,
    parse_bucket_key,
    user_months_key,
)
from tokenbrake.streams.state.records import SpendTotals, UserMonthsBegan
from tokenbrake.streams.state.store import Store

#: the engine's stores, each with its persisted record type (None: the values are their records)
STORES = {"aggregates": SpendTotals, "dedupe": None, "decisions": None}


@dataclass(frozen=True, slots=True)
class EngineConfig:
    dedupe_horizon_minutes: int = 24 * 60
    dedupe_max_entries: int = 2_000_000
    lateness_minutes: int = 10  # minute buckets kept this long past the longest rolling window
    expire_every_ms: int = 60_000
    baselines_every_ms: int = 300_000  # detector models written to the decisions store this often
    #: how far ahead of the clock an event may be stamped (producer clock skew); an event
    #: further ahead is refused (``Seen.FUTURE``): it could move its tenant's clock that far
    max_future_ms: int = 300_000
    #: keep every user's month total even when no budget per user and month reads it (by
    #: default they are kept only while one does: see streams.aggregate.spend)
    user_month_totals: bool = False


@dataclass(slots=True)
class PricedEvent:
    event: UsageEvent
    ts_ms: int
    cost_nanos: int
    priced: bool
    fresh: bool  # False for a redelivered message: written to ClickHouse again, not counted again


@dataclass(slots=True)
class Drained:
    """Everything decided and every state change since the last :meth:`Engine.drain`."""

    controls: list[ControlEvent]
    alerts: list[Any]
    #: store name -> (key, value or None for a deleted key, partition) of each key changed once
    changes: dict[str, list[tuple[str, Any, int]]]
    #: (tenant, minute) of events later than the minute retention: the sink recomputes them
    stale_minutes: set[tuple[str, int]]


class Engine:
    """The core's one port: events in; decisions and state changes out.

    :meth:`process` counts one event (dedupe, price, aggregate, decide), :meth:`take_controls`
    hands over the controls to publish at once, :meth:`tick` runs what time alone decides
    (period rollovers, decay, expiry), :meth:`drain` returns everything else decided and every
    state change since the last drain as one :class:`Drained`, :meth:`attach` and
    :meth:`restore` give it back its state after a restart. ``clock`` is injected (the
    worker's wall clock; none in a backtest, where the latest event time stands in), so the
    same events give the same decisions anywhere.
    """

    def __init__(self, policies: PoliciesFile, pricebook: PriceBook, config: EngineConfig | None = None,
                 clock: Callable[[], int] | None = None, detectors: DetectorHub | bool | None = None,
                 sealer: Sealer | None = None, tenant_partition: Callable[[str], int] | None = None) -> None:
        self.config = config or EngineConfig()
        self.clock = clock or (lambda: 0)
        self.pricebook = pricebook
        self.stores = {name: Store(name, record) for name, record in STORES.items()}
        self.out = Emitted()
        self.board = ControlBoard(self.out)
        decisions = self.stores["decisions"]
        self.agg = SpendAggregator(self.stores["aggregates"],
                                   max(60, policies.max_rolling_minutes) + self.config.lateness_minutes,
                                   policies.needs_user_minutes,
                                   self.config.user_month_totals or policies.needs_user_months)
        #: the month (number) whose per-user totals began after users had spent in it: a budget
        #: per user and month counts that month from the restart that added it (see restore)
        self.user_months_partial: int | None = None
        self.budgets = BudgetEvaluator(policies, self.agg, decisions, self.board, self.out)
        self.caps = RequestCostCaps(policies.request_cost_caps, decisions, self.out)
        # the partition whose changelog holds a tenant's state (the worker routes events there)
        self.tenant_partition = tenant_partition or (lambda tenant: 0)
        self.operators = OperatorOverrides(self.board, decisions, self.tenant_partition)
        self.unit_costs = UnitCostEvaluator(policies, self.agg, decisions, self.board, self.out, self.tenant_partition)
        self.unpriced = UnpricedModels(decisions, self.out)
        self.dedupe = Deduper(self.stores["dedupe"], self.config.dedupe_horizon_minutes,
                              self.config.dedupe_max_entries)
        self.detectors = DetectorHub(policies.detectors, self.out, self.board) if detectors is None else detectors
        # detector models outlive a restart only when they can be sealed (the live worker)
        self.baselines = BaselineKeeper(self.detectors, decisions, sealer) if sealer and self.detectors else None
        self._last_baselines = 0
        self.watermark = 0
        self._tenant_time: dict[str, int] = {}  # tenant -> its latest event time (see now_for)
        self._horizon_ms = self.config.dedupe_horizon_minutes * 60_000
        self.counts: Counter[str] = Counter()
        self._last_expire = 0
        # partition -> the highest position in its restored buckets: events up to it are re-read
        # messages that may be counted in some buckets already (see SpendAggregator.add_missing)
        self._reread: dict[int, int] = {}
        self._set_minute_floor()

    def _set_minute_floor(self) -> None:
        """Events later than the minute retention get no minute bucket (see SpendAggregator)."""
        now = self.now()
        if now:
            self.agg.floor_minute = max(self.agg.floor_minute, minute_of(now) - self.agg.minute_retention)

    def now(self) -> int:
        """The engine's clock: the wall clock in the live worker; without one (a backtest),
        the event time of the latest event."""
        return self.clock() or self.watermark

    def now_for(self, tenant: str) -> int:
        """A tenant's clock: the engine's, or its own latest event when that is ahead (by at
        most ``max_future_ms``). One tenant's future-dated event never moves another's
        periods or rolling windows."""
        own = self._tenant_time.get(tenant, 0)
        now = self.clock() or self.watermark
        return own if own > now else now

    def process(self, ev: UsageEvent, partition: int = 0, offset: int = -1, index: int = 0) -> PricedEvent | Seen:
        """Count one event: element ``index`` of the message at ``offset`` in ``partition``
        (offset -1: no position, as in a backtest). Returns the priced event, or
        ``Seen.DUPLICATE`` / ``Seen.LATE``."""
        ts_ms = int(ev.ts.timestamp() * 1000)
        clock = self.clock()
        if clock:
            if ts_ms > clock + self.config.max_future_ms:
                self.counts[Seen.FUTURE.value] += 1
                return Seen.FUTURE
            if ts_ms < clock - self._horizon_ms:  # older than any id remembered (even before the first expiry)
                self.counts[Seen.LATE.value] += 1
                return Seen.LATE
        pos = offset << 20 | index if offset >= 0 else -1
        seen = self.dedupe.check(ev.event_id, ts_ms, partition, pos)
        self.counts[seen.value] += 1
        if seen is Seen.DUPLICATE or seen is Seen.LATE:
            return seen
        if ev.cache_hit:  # answered from a semantic cache: no provider call, nothing billed
            cost, priced = 0, True
        else:
            call = self.pricebook.price(ev.provider, ev.model, ts_ms, ev.input_tokens, ev.output_tokens,
                                        ev.cached_input_tokens, ev.cache_write_tokens, ev.model_version)
            cost, priced = call.cost_nanos, call.priced
        reread = 0 <= pos <= self._reread.get(partition, -1)
        if seen is Seen.REDELIVERY and not reread:  # decided by this process: in every bucket already
            if ts_ms // 60_000 < self.agg.floor_minute:  # its minute's rollup may never have been stored
                self.agg.stale_minutes.add((ev.tenant_id, ts_ms // 60_000))
            return PricedEvent(ev, ts_ms, cost, priced, fresh=False)
        tenant, feature, user, model = ev.tenant_id, ev.feature_id, ev.user_id, ev.model
        if ts_ms > self.watermark:
            self.watermark = ts_ms
        if ts_ms > self._tenant_time.get(tenant, 0):
            self._tenant_time[tenant] = ts_ms
        now = self.now_for(tenant)
        vector = (cost, 1, ev.input_tokens, ev.output_tokens, ev.cached_input_tokens, ev.reasoning_tokens,
                  ev.status != "ok", ev.attempt > 0)
        if reread:  # after a restart: only the buckets this event did not reach take it
            self.agg.add_missing(tenant, feature, user, model, ts_ms, partition, vector, pos)
            self.budgets.forget_rolling()  # rolling sums are re-read from the buckets
        else:
            self.agg.add(tenant, feature, user, model, ts_ms, partition, vector, pos)
        if not priced:
            self.counts["unpriced"] += 1
            self.unpriced.on_event(ev.provider, model, tenant, cost, ts_ms, partition)
        self.budgets.on_event(tenant, feature, user, model, ev.tenant_tier, ts_ms, cost, now, partition)
        self.caps.on_event(tenant, feature, user, model, ev.tenant_tier, cost, ts_ms, partition)
        if self.unit_costs.active:
            self.unit_costs.on_usage(tenant, feature, ev.session_id, ts_ms, cost, now, partition)
        if self.detectors:
            self.detectors.observe(tenant, feature, user, model, ts_ms, cost, ev.input_tokens, ev.attempt > 0,
                                   ev.status != "ok", ev.cached_input_tokens, ev.tenant_tier)
        return PricedEvent(ev, ts_ms, cost, priced, fresh=seen is Seen.NEW)

    def record_outcome(self, outcome: OutcomeEvent) -> Seen:
        """Count one business outcome for the unit-cost policies (see decide.unit_costs):
        ``Seen.NEW``, ``DUPLICATE`` (its outcome_id was counted), ``LATE`` (of no current
        period) or ``FUTURE`` (stamped further ahead of the clock than allowed)."""
        ts_ms = int(outcome.ts.timestamp() * 1000)
        clock = self.clock()
        if clock and ts_ms > clock + self.config.max_future_ms:
            return Seen.FUTURE
        tenant = outcome.tenant_id
        counted = self.unit_costs.on_outcome(outcome.outcome_id, tenant, outcome.feature_id, outcome.kind, ts_ms,
                                             max(self.now_for(tenant), ts_ms), self.tenant_partition(tenant))
        seen = Seen.NEW if counted else Seen.LATE if counted is None else Seen.DUPLICATE
        self.counts[f"outcome_{seen.value}"] += 1
        return seen

    def tick(self) -> None:
        """Period rollovers and rolling-window decay; expiry of old buckets once a minute."""
        now = self.now()
        if now == 0:
            return
        self.budgets.tick(self.now_for)
        self.unit_costs.tick(self.now_for)
        self.operators.expire(now)
        if self.detectors:  # event time (live and backtest agree), never ahead of the clock
            self.detectors.advance(min(self.watermark, now))
        if self.baselines is not None and now - self._last_baselines >= self.config.baselines_every_ms:
            self.save_baselines()
        if now - self._last_expire >= self.config.expire_every_ms:
            self._last_expire = now
            if self.baselines is not None:
                self.baselines.expire(now)
            self.agg.expire(now)
            self.caps.expire(now)
            self.unit_costs.expire(now)
            if self.watermark:
                self.dedupe.expire(self.watermark)

    def operator_control(self, control: ControlEvent) -> None:
        """An operator's control read back from the control topic (see decide.overrides)."""
        self.operators.apply(control, self.now())

    def reassert(self, scope: Scope) -> None:
        """Emit the scope's effective decision again: the control topic's last record under its
        key is one no view accepts (see streams.emit.reassert)."""
        self.board.reissue(scope, self.now())

    def save_baselines(self) -> int:
        """Write the detector models that changed since the last save (also at shutdown)."""
        if self.baselines is None:
            return 0
        self._last_baselines = self.now()
        return self.baselines.save(self._last_baselines, self.tenant_partition)

    def take_controls(self) -> list[ControlEvent]:
        """The controls decided since the last call or drain, for publication right away
        (enforcement does not wait for the chunk to end)."""
        taken = list(self.out.controls)
        self.out.controls.clear()
        return taken

    @property
    def has_controls(self) -> bool:
        return bool(self.out.controls)

    def drain(self) -> Drained:
        """Everything decided and every state change since the last drain (call once per
        chunk and tick: it also seals the chunk's dedupe ids)."""
        self.dedupe.seal()
        taken = Drained(list(self.out.controls), list(self.out.alerts),
                        {name: store.changes() for name, store in self.stores.items()}, set(self.agg.stale_minutes))
        self.out.controls.clear()
        self.out.alerts.clear()
        self.agg.stale_minutes.clear()
        return taken

    def attach(self, tables: dict[str, tuple[dict[str, Any], dict[str, int]]]) -> None:
        """Share the worker's table dicts (key -> value, key -> partition) as the stores, so state
        is held once, and rebuild what derives from them (see :meth:`restore`)."""
        for name, (data, partitions) in tables.items():
            self.stores[name].attach(data, partitions)
        self.restore({})

    def reread_windows(self) -> dict[int, int]:
        """Partition -> the highest restored position: events up to it are counted only into
        the buckets they are missing from."""
        return dict(sorted(self._reread.items()))

    def totals(self) -> Iterable[tuple[str, list[int]]]:
        """Every aggregate (key, counters): what the ClickHouse rollups hold."""
        return self.stores["aggregates"].items()

    def encoder(self, store: str) -> Callable[[Any], Any]:
        """What turns the values of ``store`` in :meth:`drain`'s changes into their persisted
        records (``state.records``): applied by the adapter as it serialises each one."""
        return self.stores[store].encode

    def stats(self) -> dict[str, Any]:
        """Cheap figures (no scan of the spend state): counts, watermark, controls in force, keys."""
        active = self.board.active()
        return {"counts": dict(self.counts), "watermark_ms": self.watermark, "controls": len(active),
                "controls_by_action": Counter(action for action, _, _ in active.values()),
                "keys": {name: len(store) for name, store in self.stores.items()}}

    def restore(self, stores: dict[str, Iterable[tuple[str, Any, int]]]) -> None:
        """Rebuild from persisted state (a restarted worker); emits nothing."""
        for name, items in stores.items():
            self.stores[name].load(items)
        self.agg.rebuild_index()
        self.dedupe.rebuild_index()
        # re-read window per partition: the highest position any restored record mentions
        self._reread = self.agg.positions()
        for part, top in self.dedupe.restored_positions.items():
            self._reread[part] = max(top, self._reread.get(part, -1))
        self.board.clear()
        self.budgets.restore()
        self.unit_costs.restore()
        self.operators.restore()
        if self.baselines is not None:
            self.baselines.load()
        self.watermark = self.dedupe.watermark_minute * 60_000
        self._set_minute_floor()
        self._restore_user_months()

    def _restore_user_months(self) -> None:
        """Delete user month totals no budget reads (see SpendAggregator.drop_user_months); or
        find whether this month's began after users had spent in it, and keep that fact, per
        partition, so a later restart still knows (``state.records.UserMonthsBegan``)."""
        self.user_months_partial = None
        if not self.agg.user_months:
            self.agg.drop_user_months()
            return
        now = self.now()
        if not now:
            return
        month, decisions = month_of(now), self.stores["decisions"]
        marks = [(key, UserMonthsBegan.read(value)) for key, value in decisions.items() if key.startswith(USER_MONTHS)]
        for key, began in marks:
            if began.month == month:
                self.user_months_partial = month
            else:
                decisions.delete(key)  # an earlier month's
        for partition in self.agg.user_months_begin_mid_month(now):
            self.user_months_partial = month
            decisions.set(user_months_key(partition), UserMonthsBegan(month).dump(), partition)

    # -- read side -----------------------------------------------------------------------------
    def status(self, limit: int = 50) -> dict[str, Any]:
        """Spend today and this month per scope (top ``limit`` by today's spend) and active controls."""
        now = self.now()
        day, month = day_of(now), month_of(now)
        rows = []
        for key, vec in self.agg.store.items():
            kind, number, scope = parse_bucket_key(key)
            if kind == DAY and number == day:
                mvec = self.agg.get(month_key(month, scope)) or [0] * len(FIELDS)
                kept = self.agg.user_months or not is_user_scope(scope)  # else no month total
                rows.append({"scope": scope, "today_usd": str(nanos_to_usd(vec[COST])),
                             "month_usd": str(nanos_to_usd(mvec[COST])) if kept else None,
                             **{f"today_{f}": vec[i] for i, f in enumerate(FIELDS) if i != COST}})
        rows.sort(key=lambda r: -(self.agg.get(day_key(day, r["scope"])) or [0])[COST])
        controls = [{"scope": k, "action": a, "downgrade_to": m, "max_rps": r}
                    for k, (a, m, r) in sorted(self.board.active().items())]
        return {"now_ms": now, "watermark_ms": self.watermark, "spend": rows[:limit] if limit else rows,
                "spend_scopes": len(rows), "controls": controls,
                "counts": dict(self.counts), "dedupe_entries": len(self.dedupe),
                "user_month_totals": ("partial this month" if self.user_months_partial == month else "kept")
                if self.agg.user_months else "not kept (no budget per user and month)",
                "detector_models": len(self.detectors.models) if self.detectors else 0}
