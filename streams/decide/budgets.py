"""Budget evaluation: one level per (policy, scope instance), changed only on transitions.

A level counts the thresholds crossed (warn fractions, then each escalation step). Going
up emits one AlertEvent (warning below 1.0, critical from 1.0) and, when the step's
action changes the scope's effective control, one ControlEvent. When the period rolls
over, a rolling window decays below the limit, or the policy changes, the level drops and
a ``resolved`` alert plus an ``allow`` (or the next strongest control) are emitted.
Levels live in the ``decisions`` store, so a restarted worker does not re-fire.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from tokenbrake.schemas.common import dollars
from tokenbrake.schemas.control import Reason, Scope
from tokenbrake.streams.aggregate.periods import (
    DAY_MS,
    day_label,
    day_of,
    minute_of,
    month_label,
    month_of,
    month_start_ms,
)
from tokenbrake.streams.aggregate.spend import COST, SpendAggregator
from tokenbrake.streams.decide.board import Contribution, ControlBoard
from tokenbrake.streams.decide.policies import BudgetPolicy, PoliciesFile, Step
from tokenbrake.streams.emit.events import Emitted, alert
from tokenbrake.streams.price.rates import nanos_to_usd
from tokenbrake.streams.state.keys import (
    BUDGET,
    budget_key,
    day_key,
    month_key,
    parse_budget_key,
    scope_feature,
    scope_model,
    scope_tenant,
    scope_user,
)
from tokenbrake.streams.state.records import BudgetLevel
from tokenbrake.streams.state.store import Store


@dataclass(slots=True)
class _Compiled:
    policy: BudgetPolicy
    thresholds: list[int]
    n_warn: int
    rolling: int | None
    fingerprint: str
    dimension: str  # tenant | feature | user | model


class RollingSum:
    """Spend of one scope over the last ``minutes`` minutes, kept incrementally."""

    __slots__ = ("minutes", "lo", "total")

    def __init__(self, minutes: int, now_minute: int, agg: SpendAggregator, scope: str) -> None:
        self.minutes = minutes
        self.lo = now_minute - minutes + 1
        self.total = sum(agg.minute_cost(scope, m) for m in range(self.lo, now_minute + 61))

    def add(self, minute: int, cost: int) -> None:
        if minute >= self.lo:
            self.total += cost

    def value(self, now_minute: int, agg: SpendAggregator, scope: str) -> int:
        new_lo = now_minute - self.minutes + 1
        if new_lo - self.lo > self.minutes + 60:
            self.__init__(self.minutes, now_minute, agg, scope)  # type: ignore[misc]
        while self.lo < new_lo:
            self.total -= agg.minute_cost(scope, self.lo)
            self.lo += 1
        return self.total


def _agg_scope(dim: str, tenant: str, feature: str, user: str, model: str) -> str:
    """The aggregate a policy of this dimension reads (a plain string: no object per event)."""
    if dim == "feature":
        return scope_feature(tenant, feature)
    if dim == "user":
        return scope_user(tenant, user)
    if dim == "model":
        return scope_model(tenant, model)
    return scope_tenant(tenant)


def _scope(dim: str, tenant: str, feature: str, user: str, model: str) -> Scope:
    """The contract Scope, built only when a level changes."""
    return Scope(tenant_id=tenant, feature_id=feature if dim == "feature" else None,
                 user_id=user if dim == "user" else None, model=model if dim == "model" else None)


class BudgetEvaluator:
    """Keeps each budget policy's level per scope from the aggregates, and turns a change of
    level into one control wish on the board and one alert.

    :meth:`on_event` re-evaluates the policies an event touches (a level moves only when the
    spend leaves the band it is in); :meth:`tick` closes rolled-over periods, lets rolling
    windows decay and retires edited or removed policies; :meth:`restore` re-derives the
    board's wishes from the persisted levels without emitting anything.
    """

    def __init__(self, policies: PoliciesFile, agg: SpendAggregator, store: Store, board: ControlBoard,
                 out: Emitted) -> None:
        self.agg, self.store, self.board, self.out = agg, store, board, out
        self._compiled = {}
        for policy in policies.budgets:
            thresholds = policy.thresholds_nanos()
            self._compiled[policy.id] = _Compiled(policy, thresholds, len(set(policy.warn_at)), policy.rolling_minutes,
                                             policy.fingerprint(), policy.scope.dimension)
        self._match_cache: dict[tuple[str, str, str, str, str | None], list[_Compiled]] = {}
        self._user_specific = any(p.scope.user not in (None, "*") for p in policies.budgets)
        self._rolling: dict[str, RollingSum] = {}
        # fixed periods only go up, so a level cannot change until spend reaches the next
        # threshold: (policy id, scope) -> (period, day/month key, next threshold). Derived, not
        # persisted; dropped on every tick (rollover, policy change) and on restore.
        self._bands: dict[tuple[str, str], tuple[int, str, int]] = {}

    def forget_rolling(self) -> None:
        """Drop the rolling sums (derived): the next evaluation re-reads them from the buckets.
        For events re-read after a restart, which may already be in the buckets."""
        self._rolling.clear()

    def _matching(self, tenant: str, feature: str, user: str, model: str, tier: str | None) -> list[_Compiled]:
        ckey = (tenant, feature, user if self._user_specific else "", model, tier)
        found = self._match_cache.get(ckey)
        if found is None:
            if len(self._match_cache) > 100_000:
                self._match_cache.clear()
            found = [c for c in self._compiled.values()
                     if c.policy.scope.matches(tenant, feature, user, model, tier)]
            self._match_cache[ckey] = found
        return found

    def on_event(self, tenant: str, feature: str, user: str, model: str, tier: str | None,
                 ts_ms: int, cost: int, now_ms: int, partition: int) -> None:
        for compiled in self._matching(tenant, feature, user, model, tier):
            agg_scope = _agg_scope(compiled.dimension, tenant, feature, user, model)
            if compiled.rolling is not None:
                rkey = f"{compiled.policy.id}|{agg_scope}"
                rolling = self._rolling.get(rkey)
                if rolling is None:  # initialised from the buckets, which already hold this event
                    self._rolling[rkey] = RollingSum(compiled.rolling, minute_of(now_ms), self.agg, agg_scope)
                else:
                    rolling.add(minute_of(ts_ms), cost)
            else:
                period = day_of(ts_ms) if compiled.policy.period == "day" else month_of(ts_ms)
                if period != self._period(compiled, now_ms):
                    continue  # a late event for a closed period: counted, but decides nothing now
                band = self._bands.get((compiled.policy.id, agg_scope))
                if band is not None and band[0] == period:
                    vec = self.agg.get(band[1])
                    if (vec[COST] if vec else 0) < band[2]:
                        continue  # below the next threshold: the level cannot have changed
            self._evaluate(compiled, agg_scope, (tenant, feature, user, model), ts_ms, now_ms, partition, tier)

    def _period(self, compiled: _Compiled, now_ms: int) -> int:
        if compiled.rolling is not None:
            return 0
        return day_of(now_ms) if compiled.policy.period == "day" else month_of(now_ms)

    def _spend(self, compiled: _Compiled, agg_scope: str, now_ms: int) -> int:
        if compiled.rolling is not None:
            rkey = f"{compiled.policy.id}|{agg_scope}"
            rolling = self._rolling.get(rkey)
            if rolling is None:
                rolling = self._rolling[rkey] = RollingSum(compiled.rolling, minute_of(now_ms), self.agg, agg_scope)
            return rolling.value(minute_of(now_ms), self.agg, agg_scope)
        key = day_key(day_of(now_ms), agg_scope) if compiled.policy.period == "day" else \
            month_key(month_of(now_ms), agg_scope)
        vec = self.agg.get(key)
        return vec[COST] if vec else 0

    def _evaluate(self, compiled: _Compiled, agg_scope: str, scope: Scope | tuple[str, str, str, str], at_ms: int,
                  now_ms: int, partition: int | None, tier: str | None = None) -> None:
        skey = budget_key(compiled.policy.id, agg_scope)
        period = self._period(compiled, now_ms)
        state = BudgetLevel.read(self.store.get(skey))
        level = state.level_in(period) if state else 0
        spend = self._spend(compiled, agg_scope, now_ms)
        new_level = bisect_right(compiled.thresholds, spend)
        if compiled.rolling is None:
            key = day_key(period, agg_scope) if compiled.policy.period == "day" else month_key(period, agg_scope)
            top = max(level, new_level)
            upper = compiled.thresholds[top] if top < len(compiled.thresholds) else 1 << 62
            self._bands[(compiled.policy.id, agg_scope)] = (period, key, upper)
        if new_level == level:
            return
        if new_level < level and compiled.rolling is None:
            return  # fixed periods only go up within a period
        if isinstance(scope, tuple):
            scope = _scope(compiled.dimension, *scope)
        step = self._step(compiled, new_level)
        wish = [step.action, step.to_model, step.max_rps] if step else None
        self.store.set(skey, BudgetLevel(period, new_level, compiled.fingerprint, scope.model_dump(mode="json"),
                                         wish).dump(), partition)
        self._transition(compiled, scope, agg_scope, level, new_level, spend, at_ms, now_ms, tier=tier)

    def _transition(self, compiled: _Compiled, scope: Scope, agg_scope: str, old: int, new: int, spend: int,
                    at_ms: int, now_ms: int, period_label: str | None = None, tier: str | None = None) -> None:
        policy = compiled.policy
        label = period_label or self._label(compiled, now_ms)
        idx = max(new, old) - 1
        threshold = nanos_to_usd(compiled.thresholds[min(idx, len(compiled.thresholds) - 1)])
        observed = nanos_to_usd(spend)
        dedup = f"budget:{policy.id}:{scope.key()}:{label}"
        if new == 0:
            alert(self.out, rule="budget", scope=scope, severity="info", state="resolved",
                  summary=f"{scope.key()} back under budget {policy.id} ({label})", observed=observed,
                  threshold=threshold, dedup_key=dedup, at_ms=at_ms, policy_id=policy.id)
        else:
            exceeded = new > compiled.n_warn
            pct = (spend * 100 // max(compiled.thresholds[compiled.n_warn], 1)) if compiled.thresholds else 0
            alert(self.out, rule="budget", scope=scope, severity="critical" if exceeded else "warning",
                  state="firing", summary=f"{scope.key()} at {pct}% of {policy.id} ({dollars(observed)} of "
                                          f"{dollars(policy.limit_usd)}, {label})",
                  observed=observed, threshold=threshold, dedup_key=dedup, at_ms=at_ms, policy_id=policy.id,
                  tenant_tier=tier)
        step = self._step(compiled, new)
        wish = None
        if step is not None:
            wish = Contribution(step.action, Reason(rule="budget", observed=observed, threshold=threshold,
                                                    period=label, detail=self._detail(compiled, new)),
                                policy.id, step.to_model, step.max_rps, self._period_end(compiled, now_ms))
        resolved = Reason(rule="budget", observed=observed, threshold=threshold, period=label,
                          detail=self._detail(compiled, new))
        self.board.put(scope, f"budget:{policy.id}", wish, at_ms, reason=resolved)

    @staticmethod
    def _detail(compiled: _Compiled, level: int) -> str:
        """Which step of which budget, in rounded dollars: ``budget acme-daily ($50.00 a day): step 2
        of 2, block at 1.5x ($75.00)`` (the event's observed and threshold stay exact)."""
        policy = compiled.policy
        per = {"day": "a day", "month": "a month"}.get(policy.period, f"per {policy.period.removeprefix('rolling:')}")
        head = f"budget {policy.id} ({dollars(policy.limit_usd)} {per})"
        idx = level - compiled.n_warn - 1
        if level == 0:
            return f"{head}: back under"
        if idx < 0:
            at = sorted(set(policy.warn_at))[level - 1]
            return f"{head}: warning at {at}x ({dollars(policy.limit_usd * at)})"
        if not policy.steps:
            return f"{head}: exceeded"
        step = policy.steps[idx]
        action = {"downgrade": f"downgrade to {step.to_model}", "throttle": f"throttle to {step.max_rps} rps"}.get(
            step.action, step.action)
        amount = dollars(policy.limit_usd * step.at)
        return f"{head}: step {idx + 1} of {len(policy.steps)}, {action} at {step.at}x ({amount})"

    @staticmethod
    def _step(compiled: _Compiled, level: int) -> Step | None:
        idx = level - compiled.n_warn - 1
        return compiled.policy.steps[idx] if 0 <= idx < len(compiled.policy.steps) else None

    def _label(self, compiled: _Compiled, now_ms: int) -> str:
        if compiled.rolling is not None:
            return compiled.policy.period
        if compiled.policy.period == "day":
            return f"day:{day_label(day_of(now_ms))}"
        return f"month:{month_label(month_of(now_ms))}"

    def _period_end(self, compiled: _Compiled, now_ms: int) -> int | None:
        if compiled.rolling is not None:
            return None
        if compiled.policy.period == "day":
            return (day_of(now_ms) + 1) * DAY_MS
        return month_start_ms(month_of(now_ms) + 1)

    def tick(self, now_of: Callable[[str], int]) -> None:
        """Close rolled-over periods, let rolling windows decay, retire changed policies, each
        scope on its tenant's clock (``now_of(tenant)``)."""
        self._bands.clear()
        for skey, value in list(self.store.items()):
            if not skey.startswith(BUDGET):
                continue
            state = BudgetLevel.read(value)
            if state.level == 0:
                continue
            policy_id, agg_scope = parse_budget_key(skey)
            scope = Scope.model_validate(state.scope)
            now_ms = now_of(scope.tenant_id)
            compiled = self._compiled.get(policy_id)
            if compiled is None or compiled.fingerprint != state.fingerprint:  # policy removed or edited: start over
                self.store.delete(skey)
                alert(self.out, rule="budget", scope=scope, severity="info", state="resolved",
                      summary=f"{scope.key()}: policy {policy_id} removed or changed", observed=Decimal(0),
                      threshold=Decimal(0), dedup_key=f"budget:{policy_id}:{scope.key()}:policy-change",
                      at_ms=now_ms, policy_id=policy_id)
                self.board.put(scope, f"budget:{policy_id}", None, now_ms,
                               reason=Reason(rule="budget", observed=Decimal(0), threshold=Decimal(0),
                                             period="", detail=f"policy {policy_id} removed or changed"))
                if compiled is not None:
                    self._evaluate(compiled, agg_scope, scope, now_ms, now_ms, None)
                continue
            if compiled.rolling is not None:
                self._evaluate(compiled, agg_scope, scope, now_ms, now_ms, None)
            elif state.period != self._period(compiled, now_ms):
                start = (day_of(now_ms) * DAY_MS) if compiled.policy.period == "day" else \
                    month_start_ms(month_of(now_ms))
                old_label = f"day:{day_label(state.period)}" if compiled.policy.period == "day" else \
                    f"month:{month_label(state.period)}"
                self.store.set(skey, BudgetLevel(self._period(compiled, now_ms), 0, compiled.fingerprint, state.scope,
                                                 None).dump())
                self._transition(compiled, scope, agg_scope, state.level, 0, 0, start, now_ms, old_label)

    def restore(self) -> None:
        """Re-derive the control board from persisted levels (no events emitted)."""
        self._rolling.clear()
        self._bands.clear()
        for skey, value in self.store.items():
            if not skey.startswith(BUDGET):
                continue
            state = BudgetLevel.read(value)
            if state.level == 0 or state.wish is None:
                continue
            policy_id = parse_budget_key(skey)[0]
            action, to_model, max_rps = state.wish
            wish = Contribution(action, Reason(rule="budget", observed=Decimal(0), threshold=Decimal(0), period="",
                                               detail=f"policy {policy_id} (restored)"), policy_id, to_model, max_rps)
            self.board.put(Scope.model_validate(state.scope), f"budget:{policy_id}", wish, 0, emit=False)
