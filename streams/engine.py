"""The pure core, shared by the live worker and the offline backtest.

ingest (dedupe) -> price -> aggregate -> decide (budgets, caps, detectors) -> emit.
No Kafka, no ClickHouse, no clock of its own: the caller passes events in order, calls
:meth:`Engine.tick` now and then, and takes what was decided with :meth:`Engine.drain`.
State lives in three :class:`Store` objects that the Faust adapter mirrors into tables.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from schemas.control import ControlEvent
from schemas.signing import Sealer
from schemas.usage import UsageEvent
from streams.aggregate.periods import day_of, minute_of, month_of
from streams.aggregate.spend import COST, FIELDS, SpendAggregator, day_key, month_key
from streams.aggregate.store import Store
from streams.decide.baselines import BaselineKeeper
from streams.decide.budgets import BudgetEvaluator
from streams.decide.caps import RequestCostCaps, UnpricedModels
from streams.decide.detection import DetectorHub
from streams.decide.overrides import OperatorOverrides
from streams.decide.policies import PoliciesFile
from streams.emit.events import ControlBoard, Emitted
from streams.ingest.dedupe import Deduper, Seen
from streams.price.pricebook import PriceBook
from streams.price.rates import nanos_to_usd

STORES = ("aggregates", "dedupe", "decisions")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    dedupe_horizon_minutes: int = 24 * 60
    dedupe_max_entries: int = 2_000_000
    lateness_minutes: int = 10  # minute buckets kept this long past the longest rolling window
    expire_every_ms: int = 60_000
    baselines_every_ms: int = 300_000  # detector models written to the decisions store this often


@dataclass(slots=True)
class PricedEvent:
    event: UsageEvent
    ts_ms: int
    cost_nanos: int
    priced: bool
    fresh: bool  # False for a redelivered message: written to ClickHouse again, not counted again


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Engine:
    def __init__(self, policies: PoliciesFile, pricebook: PriceBook, config: EngineConfig | None = None,
                 clock: Callable[[], int] | None = None, detectors: DetectorHub | bool | None = None,
                 sealer: Sealer | None = None, tenant_partition: Callable[[str], int] | None = None) -> None:
        self.config = config or EngineConfig()
        self.clock = clock or (lambda: 0)
        self.pricebook = pricebook
        self.stores = {name: Store(name) for name in STORES}
        self.out = Emitted()
        self.board = ControlBoard(self.out)
        decisions = self.stores["decisions"]
        self.agg = SpendAggregator(self.stores["aggregates"],
                                   max(60, policies.max_rolling_minutes) + self.config.lateness_minutes,
                                   policies.needs_user_minutes)
        self.budgets = BudgetEvaluator(policies, self.agg, decisions, self.board, self.out)
        self.caps = RequestCostCaps(policies.request_cost_caps, decisions, self.out)
        # the partition whose changelog holds a tenant's state (the worker routes events there)
        self.tenant_partition = tenant_partition or (lambda tenant: 0)
        self.operators = OperatorOverrides(self.board, decisions, self.tenant_partition)
        self.unpriced = UnpricedModels(decisions, self.out)
        self.dedupe = Deduper(self.stores["dedupe"], self.config.dedupe_horizon_minutes,
                              self.config.dedupe_max_entries)
        self.detectors = DetectorHub(policies.detectors, self.out, self.board) if detectors is None else detectors
        # detector models outlive a restart only when they can be sealed (the live worker)
        self.baselines = BaselineKeeper(self.detectors, decisions, sealer) if sealer and self.detectors else None
        self._last_baselines = 0
        self.watermark = 0
        self.counts: Counter[str] = Counter()
        self._last_expire = 0
        self._set_minute_floor()

    def _set_minute_floor(self) -> None:
        """Events later than the minute retention get no minute bucket (see SpendAggregator)."""
        now = self.now()
        if now:
            self.agg.floor_minute = max(self.agg.floor_minute, minute_of(now) - self.agg.minute_retention)

    def now(self) -> int:
        return max(self.watermark, self.clock())

    def process(self, ev: UsageEvent, partition: int = 0, offset: int = -1) -> PricedEvent | Seen:
        """Count one event. Returns the priced event, or ``Seen.DUPLICATE`` / ``Seen.LATE``."""
        ts_ms = int(ev.ts.timestamp() * 1000)
        seen = self.dedupe.check(ev.event_id, ts_ms, partition, offset)
        self.counts[seen.value] += 1
        if seen is Seen.DUPLICATE or seen is Seen.LATE:
            return seen
        if ev.cache_hit:  # answered from a semantic cache: no provider call, nothing billed
            cost, priced = 0, True
        else:
            call = self.pricebook.price(ev.provider, ev.model, ts_ms, ev.input_tokens, ev.output_tokens,
                                        ev.cached_input_tokens, ev.cache_write_tokens, ev.model_version)
            cost, priced = call.cost_nanos, call.priced
        if seen is Seen.REDELIVERY:
            if ts_ms // 60_000 < self.agg.floor_minute:  # its minute's rollup may never have been stored
                self.agg.stale_minutes.add((ev.tenant_id, ts_ms // 60_000))
            return PricedEvent(ev, ts_ms, cost, priced, fresh=False)
        if ts_ms > self.watermark:
            self.watermark = ts_ms
        now = self.now()
        tenant, feature, user, model = ev.tenant_id, ev.feature_id, ev.user_id, ev.model
        vector = (cost, 1, ev.input_tokens, ev.output_tokens, ev.cached_input_tokens, ev.reasoning_tokens,
                  ev.status != "ok", ev.attempt > 0)
        self.agg.add(tenant, feature, user, model, ts_ms, partition, vector)
        if not priced:
            self.counts["unpriced"] += 1
            self.unpriced.on_event(ev.provider, model, tenant, cost, ts_ms, partition)
        self.budgets.on_event(tenant, feature, user, model, ev.tenant_tier, ts_ms, cost, now, partition)
        self.caps.on_event(tenant, feature, user, model, ev.tenant_tier, cost, ts_ms, partition)
        if self.detectors:
            self.detectors.observe(tenant, feature, user, model, ts_ms, cost, ev.input_tokens, ev.attempt > 0,
                                   ev.status != "ok", ev.cached_input_tokens)
        return PricedEvent(ev, ts_ms, cost, priced, fresh=True)

    def tick(self) -> None:
        """Period rollovers and rolling-window decay; expiry of old buckets once a minute."""
        now = self.now()
        if now == 0:
            return
        self.budgets.tick(now)
        self.operators.expire(now)
        if self.detectors:
            self.detectors.advance(self.watermark)  # event time only: live and backtest agree
        if self.baselines is not None and now - self._last_baselines >= self.config.baselines_every_ms:
            self.save_baselines()
        if now - self._last_expire >= self.config.expire_every_ms:
            self._last_expire = now
            if self.baselines is not None:
                self.baselines.expire(now)
            self.agg.expire(now)
            self.caps.expire(now)
            if self.watermark:
                self.dedupe.expire(self.watermark)

    def operator_control(self, control: ControlEvent) -> None:
        """An operator's control read back from the control topic (see decide.overrides)."""
        self.operators.apply(control, self.now())

    def save_baselines(self) -> int:
        """Write the detector models that changed since the last save (also at shutdown)."""
        if self.baselines is None:
            return 0
        self._last_baselines = self.now()
        return self.baselines.save(self._last_baselines, self.tenant_partition)

    def drain(self) -> Emitted:
        """Take the control and alert events decided since the last drain (call once per batch:
        it also seals the batch's dedupe chunk)."""
        self.dedupe.seal()
        taken = Emitted(list(self.out.controls), list(self.out.alerts))
        self.out.controls.clear()
        self.out.alerts.clear()
        return taken

    def restore(self, stores: dict[str, Iterable[tuple[str, Any, int]]]) -> None:
        """Rebuild from persisted state (a restarted worker); emits nothing."""
        for name, items in stores.items():
            self.stores[name].load(items)
        self.agg.rebuild_index()
        self.dedupe.rebuild_index()
        self.board.clear()
        self.budgets.restore()
        self.operators.restore()
        if self.baselines is not None:
            self.baselines.load()
        self.watermark = self.dedupe.watermark_minute * 60_000
        self._set_minute_floor()

    # -- read side -----------------------------------------------------------------------------
    def status(self, limit: int = 50) -> dict[str, Any]:
        """Spend today and this month per scope (top ``limit`` by today's spend) and active controls."""
        now = self.now()
        day, month = day_of(now), month_of(now)
        prefix = f"d{day}|"
        rows = []
        for key, vec in self.agg.store.items():
            if key.startswith(prefix):
                scope = key[len(prefix):]
                mvec = self.agg.get(month_key(month, scope)) or [0] * len(FIELDS)
                rows.append({"scope": scope, "today_usd": str(nanos_to_usd(vec[COST])),
                             "month_usd": str(nanos_to_usd(mvec[COST])),
                             **{f"today_{f}": vec[i] for i, f in enumerate(FIELDS) if i != COST}})
        rows.sort(key=lambda r: -(self.agg.get(day_key(day, r["scope"])) or [0])[COST])
        controls = [{"scope": k, "action": a, "downgrade_to": m, "max_rps": r}
                    for k, (a, m, r) in sorted(self.board.active().items())]
        return {"now_ms": now, "watermark_ms": self.watermark, "spend": rows[:limit], "controls": controls,
                "counts": dict(self.counts), "dedupe_entries": len(self.dedupe),
                "detector_models": len(self.detectors.models) if self.detectors else 0}
