"""Run the River detectors on closed event-time buckets, not on every event.

Per event the hub only adds to a few open buckets (``detectors/buckets.py``: minute per tenant x
feature x model, 10 minutes per tenant x feature for the cache, hour per tenant and tenant x
feature, the day's spend per user). When the watermark passes a bucket's end (plus ``lateness``),
the bucket is closed and each detector scored on it turns it into feature dicts (its
``features_of``), in the registry's order; a flagged one fires one alert per incident and is *not*
learned; a normal one is learned. After ``cooldown`` normal buckets an incident is resolved. A
detector that issues controls (``cost_rate``: default downgrade) puts a control on the board that
expires after ``ttl`` or is lifted on resolve. No rule is named here: the registry says what is
scored on what. Everything runs on event time, so the backtest and the live worker agree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tokenbrake.detectors.buckets import BUILTIN, CALLS_MINUTE, TENANTS_HOUR, Bucket, Closed
from tokenbrake.detectors.registry import REGISTRY, DetectorSpec
from tokenbrake.schemas.control import Reason, Scope
from tokenbrake.streams.aggregate.periods import parse_ttl_seconds
from tokenbrake.streams.decide.board import Contribution, ControlBoard
from tokenbrake.streams.emit.events import Emitted, alert

COST_RATE_DEFAULT_TARGET = "gpt-4o-mini"  # the model a cost_rate control downgrades to unless told
RESOLVE_BELOW = 0.5  # an incident ends after `cooldown` buckets scoring under this
SAMPLE = 512  # per-bucket sample of call costs and token counts, for medians
CONTROL_KEYS = {"action", "to_model", "max_rps", "ttl"}


@dataclass
class RuleConfig:
    enabled: bool
    params: dict[str, Any]
    cooldown: int = 3
    action: str | None = None
    to_model: str | None = None
    max_rps: float | None = None
    ttl_s: int = 900


def parse_detector_config(raw: dict[str, dict[str, Any]],
                          registry: tuple[DetectorSpec, ...] = REGISTRY) -> dict[str, RuleConfig]:
    """Validate the policies file's ``detectors:`` section (errors name rule and key)."""
    specs = {spec.rule: spec for spec in registry if spec.bucket is not None}
    unknown = set(raw) - set(specs)
    if unknown:
        raise ValueError(f"detectors: unknown rule(s) {sorted(unknown)}; known: {sorted(specs)}")
    controllers = [rule for rule, spec in specs.items() if spec.issues_controls]
    configs = {}
    for rule, spec in specs.items():
        opts = dict(raw.get(rule) or {})
        enabled = bool(opts.pop("enabled", True))
        cooldown = int(opts.pop("cooldown", 3))
        control = {k: opts.pop(k) for k in list(opts) if k in CONTROL_KEYS}
        try:
            spec.cls(**opts)
        except TypeError as exc:
            raise ValueError(f"detectors.{rule}: {exc}") from None
        cfg = RuleConfig(enabled, opts, cooldown)
        if spec.issues_controls:
            cfg.action = control.get("action", "downgrade")
            cfg.to_model = control.get("to_model", COST_RATE_DEFAULT_TARGET)
            cfg.max_rps = control.get("max_rps", 1.0 if cfg.action == "throttle" else None)
            cfg.ttl_s = parse_ttl_seconds(str(control.get("ttl", "15m")))
            if cfg.action not in ("downgrade", "throttle", "block", "none"):
                raise ValueError(f"detectors.{rule}.action: {cfg.action!r} is not downgrade|throttle|block|none")
        elif control:
            raise ValueError(f"detectors.{rule}: only {', '.join(controllers)} issues controls (got {sorted(control)})")
        configs[rule] = cfg
    return configs


def buckets_of(registry: tuple[DetectorSpec, ...]) -> list[Bucket]:
    """The buckets to close, in order: those the registry's detectors are scored on (in the order
    of the first detector on each), then the built-in ones no detector reads (filled all the
    same, so closed and dropped). Raises ValueError on a registry the hub cannot run."""
    rules: set[str] = set()
    order: dict[str, Bucket] = {}
    for spec in registry:
        if spec.rule in rules:
            raise ValueError(f"detectors: rule {spec.rule!r} is registered twice")
        rules.add(spec.rule)
        bucket = spec.bucket
        if bucket is None:
            continue
        if spec.features_of is None:
            raise ValueError(f"detectors.{spec.rule}: scored on {bucket.name} but declares no features_of")
        if spec.early is not None and bucket != CALLS_MINUTE:
            raise ValueError(f"detectors.{spec.rule}: early scoring is on {CALLS_MINUTE.name} only")
        if bucket.builtin and bucket not in BUILTIN:
            raise ValueError(f"detectors.{spec.rule}: bucket {bucket.name} is not built in and declares no add")
        if order.setdefault(bucket.name, bucket) != bucket:
            raise ValueError(f"detectors.{spec.rule}: another bucket is already named {bucket.name!r}")
    for bucket in BUILTIN:
        order.setdefault(bucket.name, bucket)
    return list(order.values())


class DetectorHub:
    """Feeds the registry's detectors from event-time buckets and applies the decision rule
    on top of them: fire once per incident, never learn from a flagged bucket, resolve after
    ``cooldown`` normal ones, and for a detector that issues controls put its wish on the board.

    :meth:`observe` per event only adds to open buckets; :meth:`advance` closes the buckets the
    watermark has passed. ``models``, ``active`` and ``dirty`` are what
    :class:`~tokenbrake.streams.decide.baselines.BaselineKeeper` persists. ``registry`` is
    :data:`~tokenbrake.detectors.registry.REGISTRY` but for tests.
    """

    def __init__(self, raw_config: dict[str, dict[str, Any]], out: Emitted, board: ControlBoard,
                 lateness_ms: int = 10_000, registry: tuple[DetectorSpec, ...] = REGISTRY) -> None:
        self.config = parse_detector_config(raw_config, registry)
        self.out, self.board, self.lateness_ms = out, board, lateness_ms
        self.models: dict[tuple[str, tuple], Any] = {}
        buckets = buckets_of(registry)
        specs = [spec for spec in registry if spec.bucket is not None]
        self._specs = {spec.rule: spec for spec in specs}
        # open buckets: bucket name -> bucket start -> scope key -> counters
        self._open: dict[str, dict[int, dict[tuple, Any]]] = {bucket.name: {} for bucket in buckets}
        self._builtin = tuple(self._open[bucket.name] for bucket in BUILTIN)  # filled inline by observe
        self._extra = tuple((bucket, self._open[bucket.name]) for bucket in buckets if not bucket.builtin)
        on = [spec for spec in specs if self.config[spec.rule].enabled]
        # what advance closes, in order, and the enabled detectors scored on each
        self._closing = tuple((bucket, self._open[bucket.name], tuple(s for s in on if s.bucket == bucket))
                              for bucket in buckets)
        self._early = tuple(spec for spec in on if spec.early is not None)
        self._memory: dict[str, dict] = {spec.rule: {} for spec in specs}  # what features_of keeps between buckets
        self._users: dict[str, dict[str, int]] = defaultdict(dict)  # tenant -> user -> spend today
        self._user_day = -1
        self._call_costs: dict[int, dict[tuple, list[int]]] = {}  # minute -> scope -> sampled call costs
        self.active: dict[tuple[str, tuple], list[int]] = {}  # (rule, scope) -> [since_ms, normal_streak]
        self.tiers: dict[str, str] = {}  # tenant -> the tier of its latest event (not persisted: events bring it)
        self.dirty: set[tuple[str, tuple]] = set()  # (rule, scope) whose model or incident changed: to save
        self.enabled = [r for r, c in self.config.items() if c.enabled]
        self._current: set[tuple[str, tuple]] = set()  # models built or checked by this process
        self._layouts: dict[str, set[str]] = {}
        #: the last watermark less ``lateness``: every bucket that ends at or before it is closed
        self._cutoff = 0

    # -- per event: only additions --------------------------------------------------------------
    def observe(self, tenant: str, feature: str, user: str, model: str, ts_ms: int, cost: int,
                input_tokens: int, retry: bool, error: bool, cached_tokens: int = 0, tier: str | None = None) -> None:
        """Add one call to the open buckets it falls in. A bucket the watermark has closed is
        final: an event later than that is counted in spend, but reopening the bucket would have
        the detectors judge (and learn from) a fragment of a minute as if it were a whole one,
        again on every tick while late events trickle in. Such an event reaches only the buckets
        still open (its hour, when only its minute is closed)."""
        if tier is not None:  # the alerts name it, so a pager route by tenant tier matches them
            self.tiers[tenant] = tier
        calls, tokens, spend_hours, tenant_hours, cache_buckets = self._builtin  # as buckets.BUILTIN
        minute = ts_ms - ts_ms % 60_000
        hour = ts_ms - ts_ms % 3_600_000
        tf = (tenant, feature)
        start = ts_ms - ts_ms % 600_000
        cutoff = self._cutoff  # buckets ending at or before it are closed
        if ts_ms < cutoff:  # a late event: only its buckets still open take it
            minute_open, hour_open = minute + 60_000 > cutoff, hour + 3_600_000 > cutoff
            ten_open = start + 600_000 > cutoff
        else:
            minute_open = hour_open = ten_open = True
        if minute_open:
            # bucket lookups without setdefault(literal): no throw-away allocation per event
            buckets = calls.get(minute) or calls.setdefault(minute, {})
            tfm = (tenant, feature, model)
            vec = buckets.get(tfm)
            if vec is None:
                vec = buckets[tfm] = [0, 0, 0, 0]
            vec[0] += 1
            vec[1] += retry
            vec[2] += error
            vec[3] += cost
            if (retry or error) and self._early:
                self._score_early(tfm, vec, ts_ms)
            buckets = self._call_costs.get(minute) or self._call_costs.setdefault(minute, {})
            costs = buckets.get(tf)
            if costs is None:
                costs = buckets[tf] = []
            if len(costs) < SAMPLE:
                costs.append(cost)
        if hour_open:
            buckets = tokens.get(hour) or tokens.setdefault(hour, {})
            tok = buckets.get(tf)
            if tok is None:
                tok = buckets[tf] = [0, 0, []]
            tok[0] += 1
            tok[1] += input_tokens
            if len(tok[2]) < SAMPLE:
                tok[2].append(input_tokens)
            hourly = spend_hours.get(hour) or spend_hours.setdefault(hour, {})
            for scope in ((tenant,), tf):
                spend = hourly.get(scope)
                if spend is None:
                    hourly[scope] = [cost]
                else:
                    spend[0] += cost
        if ten_open:
            buckets = cache_buckets.get(start) or cache_buckets.setdefault(start, {})
            cache = buckets.get(tf)
            if cache is None:
                cache = buckets[tf] = [0, 0, 0, 0]
            cache[0] += 1
            cache[1] += cached_tokens > 0
            cache[2] += input_tokens
            cache[3] += cached_tokens
        for bucket, opened in self._extra:  # buckets declared with their own add (none by default)
            start = ts_ms - ts_ms % bucket.size_ms
            if start + bucket.size_ms > cutoff:
                bucket.add(opened.get(start) or opened.setdefault(start, {}), tenant, feature, user, model, cost,
                           input_tokens, retry, error, cached_tokens)
        day = ts_ms // 86_400_000
        if day != self._user_day:
            if day < self._user_day:
                return  # a late event from a closed day: counted in spend, not in today's concentration
            self._users.clear()
            self._user_day = day
        users = self._users[tenant]
        users[user] = users.get(user, 0) + cost
        if hour_open:
            heavy = tenant_hours.get(hour) or tenant_hours.setdefault(hour, {})
            if (tenant,) not in heavy:
                heavy[(tenant,)] = [0]

    def _score_early(self, scope: tuple, counters: list[int], ts_ms: int) -> None:
        """Score the still-open minute of one scope for the detectors that declare ``early``,
        when a failure lands in it. Fires at most once per incident; never learns."""
        for spec in self._early:
            rule = spec.rule
            if (rule, scope) in self.active:
                continue
            det = self._model(rule, scope)
            judged = spec.early(det, counters)
            if judged is None:
                continue
            features, observed = judged
            enough = getattr(det, "enough", None)
            if (enough is None or enough(features)) and det.score_one(features) >= 1.0:
                self.active[(rule, scope)] = [ts_ms, 0]
                self.dirty.add((rule, scope))
                self._fire(rule, scope, det, features, det.score_one(features), ts_ms, observed)

    # -- on the watermark: close, score, learn ---------------------------------------------------
    def advance(self, watermark_ms: int) -> None:
        """Close every bucket the watermark has passed (plus ``lateness``), and score each on the
        detectors that read it, all in the registry's order."""
        self._cutoff = max(self._cutoff, watermark_ms - self.lateness_ms)
        for bucket, opened, specs in self._closing:
            if not opened:
                continue
            size = bucket.size_ms
            for start in sorted(b for b in opened if b + size + self.lateness_ms <= watermark_ms):
                closed = Closed(start, start + size, opened.pop(start), self._beside(bucket, start))
                for spec in specs:
                    rule, memory = spec.rule, self._memory[spec.rule]
                    for scope, features, observed in spec.features_of(closed, memory):
                        self._judge(rule, scope, features, closed.end, observed)

    def _beside(self, bucket: Bucket, start: int) -> Any:
        """What the hub keeps beside a closed built-in bucket (its ``layout`` says what)."""
        if bucket.name == CALLS_MINUTE.name:
            samples = self._call_costs.pop(start, {})
            for stale in [m for m in self._call_costs if m < start]:
                del self._call_costs[stale]
            return samples
        if bucket.name == TENANTS_HOUR.name:
            return self._users
        return None

    # -- the decision rule on top of every detector -----------------------------------------------
    def _model(self, rule: str, scope: tuple) -> Any:
        key = (rule, scope)
        det = self.models.get(key)
        if det is None:
            det = self.models[key] = self._specs[rule].cls(**self.config[rule].params)
            self._current.add(key)
        elif key not in self._current:
            # restored from a snapshot: a model pickled by an earlier version of its class (other
            # state attributes) would fail on first use; it learns afresh instead
            if set(vars(det)) != self._layout(rule):
                det = self.models[key] = self._specs[rule].cls(**self.config[rule].params)
            self._current.add(key)
        return det

    def _layout(self, rule: str) -> set[str]:
        layout = self._layouts.get(rule)
        if layout is None:
            layout = self._layouts[rule] = set(vars(self._specs[rule].cls(**self.config[rule].params)))
        return layout

    def _judge(self, rule: str, scope: tuple, features: dict[str, Any], at_ms: int, observed: Decimal) -> None:
        det = self._model(rule, scope)
        enough = getattr(det, "enough", None)
        if enough is not None and not enough(features):
            return  # too little data to judge: neither scored, nor learned, nor "back to normal"
        score = det.score_one(features)
        self.dirty.add((rule, scope))
        active = self.active.get((rule, scope))
        if score >= 1.0:
            if active is None:
                self.active[(rule, scope)] = [at_ms, 0]
                self._fire(rule, scope, det, features, score, at_ms, observed)
            else:
                active[1] = 0
            return  # never learn from a flagged bucket
        if active is not None and score >= RESOLVE_BELOW:
            return  # hysteresis: still suspicious, neither learned nor counted as back to normal
        det.learn_one(features)
        if active is not None:
            active[1] += 1
            if active[1] >= self.config[rule].cooldown:
                del self.active[(rule, scope)]
                self._resolve(rule, scope, active[0], at_ms, observed)

    def _scope(self, scope: tuple) -> Scope:
        tenant, feature, model = (*scope, None, None)[:3]
        return Scope(tenant_id=tenant, feature_id=feature, model=model)

    def _fire(self, rule: str, scope: tuple, det: Any, features: dict[str, Any], score: float, at_ms: int,
              observed: Decimal) -> None:
        alert_scope = self._scope(scope)
        summary = f"{rule} on {alert_scope.key()}: score {score:.1f}"
        describe = getattr(det, "describe", None)  # the detector's own figures, when it has any
        if describe is not None:
            summary += f"; {describe(features, observed)}"
        controls = self._specs[rule].issues_controls
        alert(self.out, rule=rule, scope=alert_scope, severity="critical" if score >= 2 or controls else "warning",
              state="firing", summary=summary, observed=observed, threshold=Decimal(1),
              dedup_key=f"{rule}:{alert_scope.key()}:{at_ms}", at_ms=at_ms, tenant_tier=self.tiers.get(scope[0]))
        cfg = self.config[rule]
        if controls and cfg.action != "none":
            reason_of = getattr(det, "control_reason", None)  # the detector's own words, when it has them
            threshold, detail = (Decimal(1), f"{rule} score {score:.1f}") if reason_of is None else reason_of(score)
            reason = Reason(rule=rule, observed=observed, threshold=threshold, period=self._specs[rule].bucket.period,
                            detail=detail)
            wish = Contribution(cfg.action, reason, None, cfg.to_model, cfg.max_rps, at_ms + cfg.ttl_s * 1000)
            self.board.put(alert_scope, f"detector:{rule}", wish, at_ms)

    def _resolve(self, rule: str, scope: tuple, since_ms: int, at_ms: int, observed: Decimal) -> None:
        alert_scope = self._scope(scope)
        alert(self.out, rule=rule, scope=alert_scope, severity="info", state="resolved",
              summary=f"{rule} on {alert_scope.key()} back to normal", observed=observed, threshold=Decimal(1),
              dedup_key=f"{rule}:{alert_scope.key()}:{since_ms}", at_ms=at_ms, tenant_tier=self.tiers.get(scope[0]))
        if self._specs[rule].issues_controls:
            self.board.put(alert_scope, f"detector:{rule}", None, at_ms,
                           reason=Reason(rule=rule, observed=observed, threshold=Decimal(0),
                                         period=self._specs[rule].bucket.period,
                                         detail=f"{rule.replace('_', ' ')} back to normal"))
