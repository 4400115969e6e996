"""Unit-cost policies: a tenant x feature's spend per business outcome (or per session) over
the current day or month, judged against ``max_usd`` with the budgets' alert/control machinery.

The live unit cost of a (tenant, feature) is ``S / N``: ``S`` is the feature's spend in the
period (the engine's own day or month aggregate: every call of the feature, exact
nano-dollars), ``N`` the number of its outcomes of kind ``per`` in the period, or with
``per: session`` the number of distinct ``session_id`` among its calls. It is judged once
``N >= min_count``, without a division: over means ``S > max_usd x N``. (ClickHouse's cost
per outcome, :mod:`streams.finops.outcomes`, attributes linked calls to their outcomes; for a
feature that produces one kind of outcome both give the same figure per day.)

Persisted state, all in the ``decisions`` store (the engine's changelog-backed table), so a
restarted worker neither forgets nor counts anything twice:

- ``uo|<tenant>|<outcome_id>`` -> :func:`outcome_mark`: each outcome once. The record is at
  the same time the dedupe mark and the count (counts are derived from these records on
  :meth:`UnitCostEvaluator.restore`): a redelivered outcome finds its mark and changes
  nothing, and no crash can persist one without the other.
- ``us|<period tag>|<tenant>|<feature>|<session>`` -> ``state.records.MARK`` (version 1 was
  the number 1): each session once per period (only
  for scopes a ``per: session`` policy covers); counts derived the same way.
- ``uc|<policy>|<tenant>|<feature>`` -> :class:`UnitCostState`: the firing state.

Only outcomes and sessions of the current period (on the tenant's clock) are counted; keys of
closed periods expire. A ``per: session`` policy first seeing a scope that already spent in
the period (it was added mid-period, so earlier sessions are unknown) judges it from the next
period: a partial count would overstate the average. The average rises with every call and
falls with every outcome, so it is judged on the tick (for the scopes that changed since
the last one), not per event: at most one transition per scope and tick.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from tokenbrake.schemas.common import dollars
from tokenbrake.schemas.control import Reason, Scope
from tokenbrake.streams.aggregate.periods import (
    DAY_MS,
    day_label,
    day_of,
    month_label,
    month_of,
    month_start_ms,
)
from tokenbrake.streams.aggregate.spend import COST, SpendAggregator, day_key, month_key, scope_feature
from tokenbrake.streams.decide.board import Contribution, ControlBoard
from tokenbrake.streams.decide.policies import PoliciesFile, UnitCostPolicy
from tokenbrake.streams.emit.events import Emitted, alert
from tokenbrake.streams.price.rates import nanos_to_usd, usd_to_nanos
from tokenbrake.streams.state import keys
from tokenbrake.streams.state.records import MARK
from tokenbrake.streams.state.store import Store

SESSION = "@session"  # the counter of sessions (an outcome kind cannot start with "@")
NANO = Decimal("0.000000001")


def period_tag(period: str, ts_ms: int) -> str:
    """``d<day>`` or ``M<month>``: the period an instant falls in.

    >>> period_tag("day", 86_400_000), period_tag("month", 86_400_000 * 31)
    ('d1', 'M1')
    """
    return f"d{day_of(ts_ms)}" if period == "day" else f"M{month_of(ts_ms)}"


def period_label(tag: str) -> str:
    """The period as alerts and controls name it.

    >>> period_label("d1"), period_label("M1")
    ('day:1970-01-02', 'month:1970-02')
    """
    return f"day:{day_label(int(tag[1:]))}" if tag[0] == "d" else f"month:{month_label(int(tag[1:]))}"


def period_end_ms(tag: str) -> int:
    return (int(tag[1:]) + 1) * DAY_MS if tag[0] == "d" else month_start_ms(int(tag[1:]) + 1)


def outcome_mark(ts_ms: int, feature: str, kind: str) -> dict[str, Any]:
    """The persisted record of one counted outcome (versioned)."""
    return {"v": 1, "day": day_of(ts_ms), "month": month_of(ts_ms), "feature": feature, "kind": kind}


@dataclass(slots=True)
class UnitCostState:
    """The persisted firing state of one policy on one tenant x feature."""

    period: str  # the period tag it was judged in
    level: int  # 1 = over (alert firing, action in force), 0 = not
    fingerprint: str
    from_period: str  # judged from this period on (see the module doc)
    tenant: str
    feature: str
    #: the control in force while level is 1: [action, to_model, max_rps] (restored even when
    #: the policy is gone, so that the tick can withdraw it)
    wish: list[Any] | None = None
    v: int = 1

    @classmethod
    def parse(cls, value: dict[str, Any] | None) -> UnitCostState | None:
        return None if value is None else cls(**value)

    def dump(self) -> dict[str, Any]:
        return asdict(self)


def _tag_index(tag: str) -> tuple[str, int]:
    return tag[0], int(tag[1:])


@dataclass(slots=True)
class _Compiled:
    policy: UnitCostPolicy
    limit_nanos: int
    fingerprint: str
    counter: str  # the kind counted: the outcome kind, or SESSION


class UnitCostEvaluator:
    def __init__(self, policies: PoliciesFile, agg: SpendAggregator, store: Store, board: ControlBoard,
                 out: Emitted, tenant_partition: Callable[[str], int] = lambda tenant: 0) -> None:
        self.agg, self.store, self.board, self.out = agg, store, board, out
        self.tenant_partition = tenant_partition  # whose changelog holds a tenant's keys
        self._compiled = {p.id: _Compiled(p, usd_to_nanos(p.max_usd), p.fingerprint(),
                                          SESSION if p.per_session else p.per) for p in policies.unit_costs}
        self.active = bool(self._compiled)
        #: whether any policy counts outcomes (the worker then reads the outcomes topic)
        self.needs_outcomes = any(c.counter != SESSION for c in self._compiled.values())
        self._match_cache: dict[tuple[str, str], list[_Compiled]] = {}
        self._counts: Counter[tuple[str, str, str, str]] = Counter()  # (tag, tenant, feature, kind): derived
        self._dirty: set[tuple[str, str]] = set()  # scopes to judge on the next tick: derived
        self._firing: set[str] = set()  # uc| keys at level 1: derived

    def _matching(self, tenant: str, feature: str) -> list[_Compiled]:
        found = self._match_cache.get((tenant, feature))
        if found is None:
            if len(self._match_cache) > 100_000:
                self._match_cache.clear()
            found = self._match_cache[(tenant, feature)] = [
                c for c in self._compiled.values() if c.policy.scope.matches(tenant, feature)]
        return found

    # -- input -----------------------------------------------------------------------------------
    def on_usage(self, tenant: str, feature: str, session: str | None, ts_ms: int, cost: int, now_ms: int,
                 partition: int) -> None:
        """A counted call (its cost already in the aggregates)."""
        matching = self._matching(tenant, feature)
        if not matching:
            return
        self._dirty.add((tenant, feature))
        for c in matching:
            if c.counter != SESSION:
                continue
            tag = period_tag(c.policy.period, now_ms)
            if period_tag(c.policy.period, ts_ms) != tag:
                continue  # a late call of a closed period
            skey = keys.unit_cost_key(c.policy.id, tenant, feature)
            known = self.store.get(skey)
            if known is None:  # first sight: were earlier sessions of the period missed?
                before = self._spend(c, tenant, feature, tag) - cost
                kind, index = _tag_index(tag)
                start = tag if before <= 0 else f"{kind}{index + 1}"
                self.store.set(skey, UnitCostState(tag, 0, c.fingerprint, start, tenant, feature).dump(), partition)
            elif known["period"] != tag and not known["level"]:  # seen this period: not expired as idle
                self.store.set(skey, {**known, "period": tag}, partition)
            if session is not None:
                key = keys.session_key(tag, tenant, feature, session)
                if key not in self.store:
                    self.store.set(key, MARK, partition)
                    self._counts[(tag, tenant, feature, SESSION)] += 1

    def on_outcome(self, outcome_id: str, tenant: str, feature: str, kind: str, ts_ms: int, now_ms: int,
                   partition: int) -> bool | None:
        """Count an outcome once: True when counted, False when already counted (a redelivery),
        None when it is of no current period (too late to judge anything)."""
        key = keys.outcome_key(tenant, outcome_id)
        if key in self.store:
            return False
        if day_of(ts_ms) != day_of(now_ms) and month_of(ts_ms) != month_of(now_ms):
            return None
        mark = outcome_mark(ts_ms, feature, kind)
        self.store.set(key, mark, partition)
        self._count(tenant, mark, +1)
        if self._matching(tenant, feature):
            self._dirty.add((tenant, feature))
        return True

    def _count(self, tenant: str, mark: dict[str, Any], step: int) -> None:
        for tag in (f"d{mark['day']}", f"M{mark['month']}"):
            self._counts[(tag, tenant, mark["feature"], mark["kind"])] += step

    # -- judging ---------------------------------------------------------------------------------
    def _spend(self, c: _Compiled, tenant: str, feature: str, tag: str) -> int:
        scope = scope_feature(tenant, feature)
        index = int(tag[1:])
        vec = self.agg.get(day_key(index, scope) if tag[0] == "d" else month_key(index, scope))
        return vec[COST] if vec else 0

    def tick(self, now_of: Callable[[str], int]) -> None:
        """Resolve what fired in a closed period or under a changed policy, then judge the
        scopes that changed since the last tick."""
        for skey in sorted(self._firing):
            state = UnitCostState.parse(self.store.get(skey))
            if state is None:
                self._firing.discard(skey)
                continue
            c = self._compiled.get(keys.parse_unit_cost_key(skey)[0])
            now_ms = now_of(state.tenant)
            if c is None or c.fingerprint != state.fingerprint:
                self._set(skey, c, state, 0, 0, 0, now_ms, "policy removed or changed")
            elif state.period != period_tag(c.policy.period, now_ms):
                self._set(skey, c, state, 0, 0, 0, now_ms, "period closed")
        dirty, self._dirty = self._dirty, set()
        for tenant, feature in sorted(dirty):
            now_ms = now_of(tenant)
            for c in self._matching(tenant, feature):
                self._judge(c, tenant, feature, now_ms)

    def _judge(self, c: _Compiled, tenant: str, feature: str, now_ms: int) -> None:
        p = c.policy
        tag = period_tag(p.period, now_ms)
        skey = keys.unit_cost_key(p.id, tenant, feature)
        state = UnitCostState.parse(self.store.get(skey)) or UnitCostState(tag, 0, c.fingerprint, tag, tenant, feature)
        if state.fingerprint != c.fingerprint or state.period != tag:
            if state.level:
                return  # resolved by the tick's first pass first
            state.fingerprint, state.period = c.fingerprint, tag
            if state.from_period[0] != tag[0]:  # the policy's period changed from day to month or back
                state.from_period = tag
        spend = self._spend(c, tenant, feature, tag)
        count = self._counts.get((tag, tenant, feature, c.counter), 0)
        judged = _tag_index(tag)[1] >= _tag_index(state.from_period)[1] and count >= p.min_count
        level = 1 if judged and spend > c.limit_nanos * count else 0
        if level != state.level:  # a level-0 state is persisted only where it carries from_period
            self._set(skey, c, state, level, spend, count, now_ms, "")

    def _set(self, skey: str, c: _Compiled | None, state: UnitCostState, level: int, spend: int, count: int,
             now_ms: int, why: str) -> None:
        """Move ``skey`` to ``level`` (0 or 1): persist, alert, and add or withdraw the control."""
        policy_id = keys.parse_unit_cost_key(skey)[0]
        old_label = period_label(state.period)
        scope = Scope(tenant_id=state.tenant, feature_id=state.feature)
        partition = self.store.partition_of(skey) if skey in self.store else self.tenant_partition(state.tenant)
        if c is not None and why:  # closed period or changed policy: start over in the current period
            state.period = period_tag(c.policy.period, now_ms)
            state.fingerprint = c.fingerprint
        state.level = level
        step = c.policy.action if c is not None else None
        state.wish = [step.action, step.to_model, step.max_rps] if level and step is not None else None
        if c is None:
            self.store.delete(skey)
        else:
            self.store.set(skey, state.dump(), partition)
        (self._firing.add if level else self._firing.discard)(skey)
        threshold = c.policy.max_usd if c is not None else Decimal(0)
        observed = (nanos_to_usd(spend) / count).quantize(NANO) if count else Decimal(0)
        dedup = f"unit_cost:{policy_id}:{scope.key()}:{old_label if why else period_label(state.period)}"
        per = c.policy.per if c is not None else "outcome"
        if level:
            alert(self.out, rule="unit_cost", scope=scope, severity="critical" if c and c.policy.action else "warning",
                  state="firing", summary=f"{scope.key()}: cost per {per} {dollars(observed)} over "
                                          f"{dollars(threshold)} ({policy_id}, {period_label(state.period)}: "
                                          f"{dollars(nanos_to_usd(spend))} over {count})",
                  observed=observed, threshold=threshold, dedup_key=dedup, at_ms=now_ms, policy_id=policy_id)
        else:
            alert(self.out, rule="unit_cost", scope=scope, severity="info", state="resolved",
                  summary=f"{scope.key()}: cost per {per} back under {dollars(threshold)} ({policy_id}"
                          f"{', ' + why if why else ''})",
                  observed=observed, threshold=threshold, dedup_key=dedup, at_ms=now_ms, policy_id=policy_id)
        if step is None and not why:
            return  # an alert-only policy puts no control
        reason = Reason(rule="unit_cost", observed=observed, threshold=threshold, period=period_label(state.period),
                        detail=f"unit_cost {policy_id}: cost per {per} over {dollars(threshold)}"
                               if level else f"unit_cost {policy_id}: back under{', ' + why if why else ''}")
        wish = None
        if level and step is not None:
            wish = Contribution(step.action, reason, policy_id, step.to_model, step.max_rps,
                                period_end_ms(state.period))
        self.board.put(scope, f"unit_cost:{policy_id}", wish, now_ms, reason=reason)

    # -- upkeep ----------------------------------------------------------------------------------
    def expire(self, now_ms: int) -> int:
        """Drop the marks and states of closed periods (with a day of slack for tenants whose
        clock is behind). Returns how many keys were dropped."""
        oldest_day, oldest_month = day_of(now_ms) - 1, month_of(now_ms - DAY_MS)
        dropped = []
        for key, value in self.store.items():
            if key.startswith(keys.OUTCOME):
                old = value["day"] < oldest_day and value["month"] < oldest_month
            elif key.startswith(keys.SESSION):
                kind, index = _tag_index(keys.parse_session_key(key)[0])
                old = index < (oldest_day if kind == "d" else oldest_month)
            elif key.startswith(keys.UNIT_COST):
                kind, index = _tag_index(value["period"])
                old = value["level"] == 0 and index < (oldest_day if kind == "d" else oldest_month)
            else:
                continue
            if old:
                dropped.append(key)
        for key in dropped:
            self.store.delete(key)
        for ckey in [k for k in self._counts if _tag_index(k[0])[1] < (oldest_day if k[0][0] == "d" else oldest_month)]:
            del self._counts[ckey]
        return len(dropped)

    def restore(self) -> None:
        """Re-derive counts, the firing index and the controls in force from the persisted
        records (no events emitted)."""
        self._counts.clear()
        self._dirty.clear()
        self._firing.clear()
        for key, value in self.store.items():
            if key.startswith(keys.OUTCOME):
                self._count(keys.parse_outcome_key(key)[0], value, +1)
            elif key.startswith(keys.SESSION):
                tag, tenant, feature, _session = keys.parse_session_key(key)
                self._counts[(tag, tenant, feature, SESSION)] += 1
            elif key.startswith(keys.UNIT_COST) and value["level"]:
                self._firing.add(key)
                state = UnitCostState.parse(value)
                if state is None or state.wish is None:
                    continue
                policy_id = keys.parse_unit_cost_key(key)[0]
                action, to_model, max_rps = state.wish
                reason = Reason(rule="unit_cost", observed=Decimal(0), threshold=Decimal(0),
                                period=period_label(state.period), detail=f"unit_cost {policy_id} (restored)")
                wish = Contribution(action, reason, policy_id, to_model, max_rps, period_end_ms(state.period))
                self.board.put(Scope(tenant_id=state.tenant, feature_id=state.feature), f"unit_cost:{policy_id}",
                               wish, 0, emit=False)
