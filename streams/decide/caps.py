"""Per-call rules: the per-request cost cap, and the once-per-model ``unpriced_model`` alert."""

from __future__ import annotations

from decimal import Decimal

from tokenbrake.detectors.request_cost_cap import RequestCostCap as CapDetector
from tokenbrake.schemas.control import Scope
from tokenbrake.streams.aggregate.periods import day_of
from tokenbrake.streams.decide.policies import RequestCostCap
from tokenbrake.streams.emit.events import Emitted, alert
from tokenbrake.streams.price.rates import nanos_to_usd, usd_to_nanos
from tokenbrake.streams.state.keys import CAP, cap_key, parse_cap_key, unpriced_key
from tokenbrake.streams.state.records import CapAlert, UnpricedModel
from tokenbrake.streams.state.store import Store


class RequestCostCaps:
    """Alert when one call costs more than a cap: once per tenant x feature x model per day,
    resolved when that (UTC) day is over, so that a pager closes the incident it opened.

    Store value per key: a :class:`~streams.state.records.CapAlert` record."""

    def __init__(self, caps: list[RequestCostCap], store: Store, out: Emitted) -> None:
        self._caps = [(cap, CapDetector(max_nanos=usd_to_nanos(cap.max_usd))) for cap in caps]
        self.store, self.out = store, out

    def on_event(self, tenant: str, feature: str, user: str, model: str, tier: str | None, cost: int,
                 ts_ms: int, partition: int) -> None:
        for cap, detector in self._caps:
            if not detector.exceeded(cost) or not cap.scope.matches(tenant, feature, user, model, tier):
                continue
            day = day_of(ts_ms)
            key = cap_key(cap.id, tenant, feature, model, day)
            if key in self.store:
                continue
            self.store.set(key, CapAlert(day, [tenant, feature, model]).dump(), partition)
            scope = Scope(tenant_id=tenant, feature_id=feature, model=model)
            observed = nanos_to_usd(cost)
            alert(self.out, rule="request_cost_cap", scope=scope,
                  severity="critical" if detector.score_one({"cost_nanos": cost}) > 10 else "warning",
                  state="firing",
                  summary=f"one call on {scope.key()} cost ${observed} (cap ${cap.max_usd}, user {user})",
                  observed=observed, threshold=cap.max_usd, dedup_key=f"request_cost_cap:{cap.id}:{key}",
                  at_ms=ts_ms, policy_id=cap.id, tenant_tier=tier)

    def expire(self, now_ms: int) -> None:
        """Resolve the alerts of days that are over; forget them a day later."""
        today = day_of(now_ms)
        for key, value in [(k, v) for k, v in self.store.items() if k.startswith(CAP)]:
            record = CapAlert.read(value)
            if record.day < today - 1:
                self.store.delete(key)
            elif record.day < today and not record.resolved and record.scope is not None:
                record.resolved = True
                self.store.set(key, record.dump())
                tenant, feature, model = record.scope
                cap_id = parse_cap_key(key)[0]
                scope = Scope(tenant_id=tenant, feature_id=feature, model=model)
                alert(self.out, rule="request_cost_cap", scope=scope, severity="info", state="resolved",
                      summary=f"the day of the expensive call on {scope.key()} is over (cap {cap_id})",
                      observed=Decimal(0), threshold=Decimal(0), dedup_key=f"request_cost_cap:{cap_id}:{key}",
                      at_ms=now_ms, policy_id=cap_id)


class UnpricedModels:
    """An unknown model is priced at the fallback and reported once per (provider, model)."""

    def __init__(self, store: Store, out: Emitted) -> None:
        self.store, self.out = store, out

    def on_event(self, provider: str, model: str, tenant: str, cost: int, ts_ms: int, partition: int) -> None:
        key = unpriced_key(provider, model)
        if key in self.store:
            return
        self.store.set(key, UnpricedModel(ts_ms).dump(), partition)
        alert(self.out, rule="unpriced_model", scope=Scope(tenant_id=tenant, model=model), severity="warning",
              state="firing", summary=f"model {provider}/{model} is not in the price catalog: priced at the "
              f"fallback (${nanos_to_usd(cost)} for the first call); add it to the price overrides",
              observed=nanos_to_usd(cost), threshold=nanos_to_usd(0), dedup_key=f"unpriced_model:{provider}:{model}",
              at_ms=ts_ms)
