"""Run the River detectors on closed event-time buckets, not on every event.

Per event the hub only adds to a few open buckets (minute per tenant x feature x model,
10 minutes per tenant x feature for the cache, hour per tenant and tenant x feature, the
day's spend per user). When the watermark passes a bucket's end (plus ``lateness``), every scope's bucket
is scored; a flagged bucket fires one alert per incident and is *not* learned; a normal one
is learned. After ``cooldown`` normal buckets an incident is resolved. ``cost_rate`` also
issues a control (default: downgrade) that expires after ``ttl`` or is lifted on resolve.
Everything runs on event time, so the backtest and the live worker agree.
"""

from __future__ import annotations

import statistics
from collections import defaultdict, deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tokenbrake.detectors.registry import BUCKETED, BY_RULE, COST_WINDOW_MINUTES, MINUTE_MS
from tokenbrake.schemas.control import Reason, Scope
from tokenbrake.streams.aggregate.periods import parse_ttl_seconds
from tokenbrake.streams.decide.board import Contribution, ControlBoard
from tokenbrake.streams.emit.events import Emitted, alert
from tokenbrake.streams.price.rates import nanos_to_usd

#: rule -> bucket size and rule -> class, for the detectors scored on closed buckets (the registry's order)
BUCKET_MS = {spec.rule: spec.bucket_ms for spec in BUCKETED}
CLASSES = {spec.rule: spec.cls for spec in BUCKETED}
CONTROLLERS = [spec.rule for spec in BUCKETED if spec.issues_controls]
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


def parse_detector_config(raw: dict[str, dict[str, Any]]) -> dict[str, RuleConfig]:
    """Validate the policies file's ``detectors:`` section (errors name rule and key)."""
    unknown = set(raw) - set(CLASSES)
    if unknown:
        raise ValueError(f"detectors: unknown rule(s) {sorted(unknown)}; known: {sorted(CLASSES)}")
    configs = {}
    for rule, cls in CLASSES.items():
        opts = dict(raw.get(rule) or {})
        enabled = bool(opts.pop("enabled", True))
        cooldown = int(opts.pop("cooldown", 3))
        control = {k: opts.pop(k) for k in list(opts) if k in CONTROL_KEYS}
        try:
            cls(**opts)
        except TypeError as exc:
            raise ValueError(f"detectors.{rule}: {exc}") from None
        cfg = RuleConfig(enabled, opts, cooldown)
        if BY_RULE[rule].issues_controls:
            cfg.action = control.get("action", "downgrade")
            cfg.to_model = control.get("to_model", COST_RATE_DEFAULT_TARGET)
            cfg.max_rps = control.get("max_rps", 1.0 if cfg.action == "throttle" else None)
            cfg.ttl_s = parse_ttl_seconds(str(control.get("ttl", "15m")))
            if cfg.action not in ("downgrade", "throttle", "block", "none"):
                raise ValueError(f"detectors.{rule}.action: {cfg.action!r} is not downgrade|throttle|block|none")
        elif control:
            raise ValueError(f"detectors.{rule}: only {', '.join(CONTROLLERS)} issues controls (got {sorted(control)})")
        configs[rule] = cfg
    return configs


class DetectorHub:
    """Feeds the registry's detectors from event-time buckets and applies the decision rule
    on top of them: fire once per incident, never learn from a flagged bucket, resolve after
    ``cooldown`` normal ones, and for a detector that issues controls put its wish on the board.

    :meth:`observe` per event only adds to open buckets; :meth:`advance` closes the buckets the
    watermark has passed. ``models``, ``active`` and ``dirty`` are what
    :class:`~tokenbrake.streams.decide.baselines.BaselineKeeper` persists.
    """

    def __init__(self, raw_config: dict[str, dict[str, Any]], out: Emitted, board: ControlBoard,
                 lateness_ms: int = 10_000) -> None:
        self.config = parse_detector_config(raw_config)
        self.out, self.board, self.lateness_ms = out, board, lateness_ms
        self.models: dict[tuple[str, tuple], Any] = {}
        # open buckets: rule -> bucket start -> scope key -> counters
        self._open: dict[str, dict[int, dict[tuple, list[int]]]] = {r: {} for r in BUCKET_MS}
        self._users: dict[str, dict[str, int]] = defaultdict(dict)  # tenant -> user -> spend today
        self._user_day = -1
        self._day_spend: dict[tuple, list[int]] = {}  # scope -> [day, spend so far]
        self._windows: dict[tuple, deque[tuple[int, int, int, list[int]]]] = {}  # scope -> minutes in window
        self._call_costs: dict[int, dict[tuple, list[int]]] = {}  # minute -> scope -> sampled call costs
        self.active: dict[tuple[str, tuple], list[int]] = {}  # (rule, scope) -> [since_ms, normal_streak]
        self.tiers: dict[str, str] = {}  # tenant -> the tier of its latest event (not persisted: events bring it)
        self.dirty: set[tuple[str, tuple]] = set()  # (rule, scope) whose model or incident changed: to save
        self.enabled = [r for r, c in self.config.items() if c.enabled]
        self._current: set[tuple[str, tuple]] = set()  # models built or checked by this process
        self._layouts: dict[str, set[str]] = {}
        # rule -> what closes its buckets (a rule fed by another's bucket is scored by that one's closer)
        self._closers = {spec.rule: getattr(self, f"_close_{spec.rule}") for spec in BUCKETED if spec.fed_by is None}

    # -- per event: only additions --------------------------------------------------------------
    def observe(self, tenant: str, feature: str, user: str, model: str, ts_ms: int, cost: int,
                input_tokens: int, retry: bool, error: bool, cached_tokens: int = 0, tier: str | None = None) -> None:
        if tier is not None:  # the alerts name it, so a pager route by tenant tier matches them
            self.tiers[tenant] = tier
        opened = self._open
        minute = ts_ms - ts_ms % 60_000
        hour = ts_ms - ts_ms % 3_600_000
        tf = (tenant, feature)
        # bucket lookups without setdefault(literal): no throw-away allocation per event
        buckets = opened["retry_storm"].get(minute) or opened["retry_storm"].setdefault(minute, {})
        tfm = (tenant, feature, model)
        vec = buckets.get(tfm)
        if vec is None:
            vec = buckets[tfm] = [0, 0, 0, 0]
        vec[0] += 1
        vec[1] += retry
        vec[2] += error
        vec[3] += cost
        if (retry or error) and self.config["retry_storm"].enabled:
            self._early_retry_storm(tfm, vec, ts_ms)
        buckets = opened["token_inflation"].get(hour) or opened["token_inflation"].setdefault(hour, {})
        tok = buckets.get(tf)
        if tok is None:
            tok = buckets[tf] = [0, 0, []]
        tok[0] += 1
        tok[1] += input_tokens
        if len(tok[2]) < SAMPLE:
            tok[2].append(input_tokens)
        start = ts_ms - ts_ms % 600_000
        buckets = opened["cache_regression"].get(start) or opened["cache_regression"].setdefault(start, {})
        cache = buckets.get(tf)
        if cache is None:
            cache = buckets[tf] = [0, 0, 0, 0]
        cache[0] += 1
        cache[1] += cached_tokens > 0
        cache[2] += input_tokens
        cache[3] += cached_tokens
        buckets = self._call_costs.get(minute) or self._call_costs.setdefault(minute, {})
        costs = buckets.get(tf)
        if costs is None:
            costs = buckets[tf] = []
        if len(costs) < SAMPLE:
            costs.append(cost)
        hourly = opened["spend_spike"].get(hour) or opened["spend_spike"].setdefault(hour, {})
        for scope in ((tenant,), tf):
            spend = hourly.get(scope)
            if spend is None:
                hourly[scope] = [cost]
            else:
                spend[0] += cost
        day = ts_ms // 86_400_000
        if day != self._user_day:
            if day < self._user_day:
                return  # a late event from a closed day: counted in spend, not in today's concentration
            self._users.clear()
            self._user_day = day
        users = self._users[tenant]
        users[user] = users.get(user, 0) + cost
        heavy = opened["heavy_user"].get(hour) or opened["heavy_user"].setdefault(hour, {})
        if (tenant,) not in heavy:
            heavy[(tenant,)] = [0]

    def _early_retry_storm(self, scope: tuple, vec: list[int], ts_ms: int) -> None:
        """Score the still-open minute when a failure arrives, so a storm pages within
        seconds of crossing the guards instead of at the minute's end. Never learns."""
        if ("retry_storm", scope) in self.active:
            return
        det = self._model("retry_storm", scope)
        features = {"requests": vec[0], "retries": vec[1], "errors": vec[2]}
        if vec[1] + vec[2] >= det.min_failures and det.enough(features) and det.score_one(features) >= 1.0:
            self.active[("retry_storm", scope)] = [ts_ms, 0]
            self.dirty.add(("retry_storm", scope))
            self._fire("retry_storm", scope, det, features, det.score_one(features), ts_ms,
                       Decimal(vec[1] + vec[2]) / max(vec[0], 1))

    # -- on the watermark: close, score, learn ---------------------------------------------------
    def advance(self, watermark_ms: int) -> None:
        """Close every bucket the watermark has passed (plus ``lateness``), in the registry's order."""
        for rule, close in self._closers.items():
            buckets = self._open[rule]
            if not buckets:
                continue
            size = BUCKET_MS[rule]
            for start in sorted(b for b in buckets if b + size + self.lateness_ms <= watermark_ms):
                close(start, buckets.pop(start))

    def _on(self, rule: str) -> bool:
        return self.config[rule].enabled

    def _close_token_inflation(self, start: int, closed: dict[tuple, list]) -> None:
        if not self._on("token_inflation"):
            return
        for scope, (requests, tokens, sample) in closed.items():
            median = statistics.median(sample)
            features = {"requests": requests, "input_tokens": tokens, "median_input_tokens": median}
            self._judge("token_inflation", scope, features, start + BUCKET_MS["token_inflation"],
                        observed=Decimal(str(median)))

    def _close_cache_regression(self, start: int, closed: dict[tuple, list[int]]) -> None:
        if not self._on("cache_regression"):
            return
        for scope, (requests, hits, tokens, cached) in closed.items():
            features = {"requests": requests, "cached_calls": hits, "input_tokens": tokens,
                        "cached_input_tokens": cached}
            self._judge("cache_regression", scope, features, start + BUCKET_MS["cache_regression"],
                        observed=Decimal(cached) / max(tokens, 1))

    def _close_retry_storm(self, start: int, closed: dict[tuple, list[int]]) -> None:
        """The minute bucket: scores retry_storm per (tenant, feature, model), and cost_rate per
        (tenant, feature) over the minute and the window of minutes ending with it."""
        end = start + MINUTE_MS
        if self._on("retry_storm"):
            for scope, (requests, retries, errors, _) in closed.items():
                self._judge("retry_storm", scope, {"requests": requests, "retries": retries, "errors": errors}, end,
                            observed=Decimal(retries + errors) / max(requests, 1))
        call_costs = self._call_costs.pop(start, {})
        for stale in [m for m in self._call_costs if m < start]:
            del self._call_costs[stale]
        if self._on("cost_rate"):
            per_feature: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
            for (tenant, feature, _), vec in closed.items():
                per_feature[(tenant, feature)][0] += vec[3]
                per_feature[(tenant, feature)][1] += vec[0]
            for scope, (cost, calls) in per_feature.items():
                window = self._windows.setdefault(scope, deque())
                if window and start <= window[-1][0]:
                    continue  # a late minute: its spend is counted, its rate is history
                window.append((start, cost, calls, call_costs.get(scope, [])))
                while window[0][0] <= start - COST_WINDOW_MINUTES * MINUTE_MS:
                    window.popleft()
                span = max(1, min(COST_WINDOW_MINUTES, (start - window[0][0]) // MINUTE_MS + 1))
                total, window_calls = sum(w[1] for w in window), sum(w[2] for w in window)
                # the closed minute alone (busy scopes), and the window ending with it (quiet ones)
                features = {"cost_nanos": cost, "seconds": 60, "requests": calls, "costs": call_costs.get(scope, [])}
                if span > 1:
                    features.update(window_cost_nanos=total, window_seconds=60 * span, window_requests=window_calls,
                             window_costs=[c for w in window for c in w[3]])
                self._judge("cost_rate", scope, features, end, observed=nanos_to_usd(cost))

    def _close_spend_spike(self, start: int, closed: dict[tuple, list[int]]) -> None:
        if not self._on("spend_spike"):
            return
        day = start // 86_400_000
        for scope, (spend,) in closed.items():
            running = self._day_spend.get(scope)
            if running is None or running[0] != day:
                running = self._day_spend[scope] = [day, 0]
            running[1] += spend
            features = {"spend": spend, "hour": start // 3_600_000, "day_to_date": running[1]}
            self._judge("spend_spike", scope, features, start + 3_600_000, observed=nanos_to_usd(spend))

    def _close_heavy_user(self, start: int, closed: dict[tuple, list[int]]) -> None:
        if not self._on("heavy_user"):
            return
        for (tenant,) in closed:
            features = {f"user:{u}": s for u, s in self._users.get(tenant, {}).items()}
            self._judge("heavy_user", (tenant,), features, start + 3_600_000, observed=Decimal(0))

    # -- the decision rule on top of every detector -----------------------------------------------
    def _model(self, rule: str, scope: tuple) -> Any:
        key = (rule, scope)
        det = self.models.get(key)
        if det is None:
            det = self.models[key] = CLASSES[rule](**self.config[rule].params)
            self._current.add(key)
        elif key not in self._current:
            # restored from a snapshot: a model pickled by an earlier version of its class (other
            # state attributes) would fail on first use; it learns afresh instead
            if set(vars(det)) != self._layout(rule):
                det = self.models[key] = CLASSES[rule](**self.config[rule].params)
            self._current.add(key)
        return det

    def _layout(self, rule: str) -> set[str]:
        layout = self._layouts.get(rule)
        if layout is None:
            layout = self._layouts[rule] = set(vars(CLASSES[rule](**self.config[rule].params)))
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
        controls = BY_RULE[rule].issues_controls
        alert(self.out, rule=rule, scope=alert_scope, severity="critical" if score >= 2 or controls else "warning",
              state="firing", summary=summary, observed=observed, threshold=Decimal(1),
              dedup_key=f"{rule}:{alert_scope.key()}:{at_ms}", at_ms=at_ms, tenant_tier=self.tiers.get(scope[0]))
        cfg = self.config[rule]
        if controls and cfg.action != "none":
            reason = Reason(rule=rule, observed=observed, threshold=Decimal(str(round(det.factor, 4))),
                            period="1m", detail=f"cost rate {score * det.factor:.1f}x its baseline")
            wish = Contribution(cfg.action, reason, None, cfg.to_model, cfg.max_rps, at_ms + cfg.ttl_s * 1000)
            self.board.put(alert_scope, f"detector:{rule}", wish, at_ms)

    def _resolve(self, rule: str, scope: tuple, since_ms: int, at_ms: int, observed: Decimal) -> None:
        alert_scope = self._scope(scope)
        alert(self.out, rule=rule, scope=alert_scope, severity="info", state="resolved",
              summary=f"{rule} on {alert_scope.key()} back to normal", observed=observed, threshold=Decimal(1),
              dedup_key=f"{rule}:{alert_scope.key()}:{since_ms}", at_ms=at_ms, tenant_tier=self.tiers.get(scope[0]))
        if BY_RULE[rule].issues_controls:
            self.board.put(alert_scope, f"detector:{rule}", None, at_ms,
                           reason=Reason(rule=rule, observed=observed, threshold=Decimal(0), period="1m",
                                         detail="cost rate back to normal"))
