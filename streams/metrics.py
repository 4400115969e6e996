"""Prometheus metrics: ``GET /metrics`` on the worker's web port (``prometheus_client``).

Most values are read at scrape time from what the worker keeps anyway (the engine's counts,
the worker's stats, the sink's, the control board, the consumer's offsets): nothing per
event goes through the Prometheus library. A few things exist nowhere else and are counted
here by :class:`WorkerMeter`, cheaply (an int added per counted event, a dict lookup per
label set): spend and tokens of counted events, dead letters by reason, controls and alerts
published, changelog records, decision latency (a histogram, observed per control).

Naming follows Prometheus' rules: ``tokenbrake_`` prefix, base units (seconds, USD),
counters end in ``_total``. Labels hold only bounded values: no user ids; tenants only with
``TOKENBRAKE_METRICS_TENANT_LABEL`` and then at most ``TOKENBRAKE_METRICS_MAX_TENANTS`` of
them (the first seen; the rest add to ``tenant="other"``); features, models and alert rules
at most ``TOKENBRAKE_METRICS_MAX_LABEL_VALUES`` each, likewise. Spend is exposed as a float
(Prometheus has no other number): exact amounts are in ClickHouse and on the status endpoint.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from tokenbrake.streams.faust_internals.offsets import committed_positions

log = logging.getLogger("tokenbrake.metrics")

#: engine count -> events_total outcome
_OUTCOMES = {"new": "counted", "redelivery": "redelivered", "duplicate": "duplicate", "late": "late",
             "future": "future"}
_TOKEN_TYPES = ("input", "output", "cached_input", "cache_write", "reasoning")
#: event produced -> control published, in seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class LabelCap:
    """At most ``cap`` distinct label values; later ones are ``other``.

    >>> cap = LabelCap(2)
    >>> [cap("a"), cap("b"), cap("c"), cap("a")]
    ['a', 'b', 'other', 'a']
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.kept:
            return value
        if len(self.kept) < self.cap:
            self.kept.add(value)
            return value
        return "other"


class WorkerMeter:
    """The counters only the worker's hot path sees (see the module doc)."""

    def __init__(self, tenant_label: bool = False, max_tenants: int = 50, max_label_values: int = 200) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tenant_label = tenant_label
        self._tenant, self._feature = LabelCap(max_tenants), LabelCap(max_label_values)
        self._model, self._rule = LabelCap(max_label_values), LabelCap(max_label_values)
        self._slots: dict[tuple[str, str, str], list[int]] = {}  # raw key -> its capped label set's [nanos]
        self.spend: dict[tuple[str, str, str], list[int]] = {}  # (tenant, feature, model) -> [cost nanos]
        self.tokens = [0] * len(_TOKEN_TYPES)
        self.dead_letters: Counter[str] = Counter()
        self.controls: Counter[str] = Counter()
        self.alerts: Counter[tuple[str, str]] = Counter()
        self.changelog_records: Counter[str] = Counter()
        self.latency = Histogram("tokenbrake_decision_latency_seconds", "Time from the producing of the usage "
                                 "message that triggered a control to the control's publication",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)

    @classmethod
    def from_settings(cls, settings: Any) -> WorkerMeter:
        return cls(settings.metrics_tenant_label, settings.metrics_max_tenants, settings.metrics_max_label_values)

    def priced(self, p: Any) -> None:
        """A PricedEvent: its spend and tokens, when it was counted (not a redelivery)."""
        if not p.fresh:
            return
        ev = p.event
        raw = (ev.tenant_id if self.tenant_label else "", ev.feature_id, ev.model)
        slot = self._slots.get(raw)
        if slot is None:
            if len(self._slots) > 100_000:  # raw keys beyond the caps: forget them, they map again
                self._slots.clear()
            key = (self._tenant(raw[0]) if self.tenant_label else "", self._feature(raw[1]), self._model(raw[2]))
            slot = self._slots[raw] = self.spend.setdefault(key, [0])
        slot[0] += p.cost_nanos
        tokens = self.tokens
        tokens[0] += ev.input_tokens
        tokens[1] += ev.output_tokens
        tokens[2] += ev.cached_input_tokens
        tokens[3] += ev.cache_write_tokens
        tokens[4] += ev.reasoning_tokens

    def dead_lettered(self, reason: str) -> None:
        self.dead_letters[reason] += 1

    def published(self, emitted: Any) -> None:
        for control in emitted.controls:
            self.controls[control.action] += 1
        for alert in emitted.alerts:
            self.alerts[(self._rule(alert.rule), alert.state)] += 1

    def decided(self, produced_at_s: float | None, controls: int, now_s: float | None = None) -> None:
        """``controls`` were published, triggered by the message produced at ``produced_at_s``
        (its Kafka timestamp, epoch seconds)."""
        if not produced_at_s or controls <= 0:
            return
        latency = max(0.0, (now_s if now_s is not None else time.time()) - produced_at_s)
        for _ in range(controls):
            self.latency.observe(latency)

    def changelog(self, table: str, records: int) -> None:
        if records:
            self.changelog_records[table] += records


def _counter(name: str, doc: str, labels: list[str], samples: Any) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for label_values, value in samples:
        family.add_metric(list(label_values), value)
    return family


def _gauge(name: str, doc: str, labels: list[str], samples: Any) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for label_values, value in samples:
        family.add_metric(list(label_values), value)
    return family


class WorkerCollector:
    """Reads the runtime at scrape time (``prometheus_client`` custom collector)."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def describe(self) -> list[Metric]:
        return []  # names are only known at scrape time; an empty describe keeps registration cheap

    def collect(self) -> Iterator[Metric]:
        rt = self.runtime
        meter, engine, stats = rt.meter, rt.engine.stats(), rt.stats
        counts = engine["counts"]
        outcomes = [((out,), counts.get(key, 0)) for key, out in _OUTCOMES.items()]
        outcomes += [(("forwarded",), stats["forwarded"]), (("dead_lettered",), stats["dead_lettered"])]
        yield _counter("tokenbrake_events", "Usage events read, by outcome (dead_lettered: records sent to the "
                       "dead-letter topic, see tokenbrake_dead_letters_total)", ["outcome"], outcomes)
        yield _counter("tokenbrake_dead_letters", "Records sent to the dead-letter topic, by reason", ["reason"],
                       (((r,), n) for r, n in sorted(meter.dead_letters.items())))
        yield _counter("tokenbrake_unpriced_events", "Counted events of models not in the price catalog "
                       "(priced at the fallback)", [], [((), counts.get("unpriced", 0))])
        yield _counter("tokenbrake_messages", "Usage topic messages decided and handed to the sink", [],
                       [((), stats["messages"])])
        spend_labels = ["tenant", "feature", "model"] if meter.tenant_label else ["feature", "model"]
        yield _counter("tokenbrake_spend_usd", "Spend of counted events in USD", spend_labels,
                       ((k if meter.tenant_label else k[1:], v[0] / 1e9) for k, v in sorted(meter.spend.items())))
        yield _counter("tokenbrake_tokens", "Tokens of counted events, by type (input includes cached_input and "
                       "cache_write; output includes reasoning)", ["type"],
                       (((t,), n) for t, n in zip(_TOKEN_TYPES, meter.tokens, strict=True)))
        yield _counter("tokenbrake_controls_issued", "Control events published, by action", ["action"],
                       (((a,), n) for a, n in sorted(meter.controls.items())))
        active: Counter[str] = engine["controls_by_action"]
        yield _gauge("tokenbrake_controls_active", "Scopes under a non-allow control, by action", ["action"],
                     (((a,), active.get(a, 0)) for a in ("downgrade", "throttle", "block")))
        yield _counter("tokenbrake_alerts", "Alert events published, by rule and state", ["rule", "state"],
                       (((r, s), n) for (r, s), n in sorted(meter.alerts.items())))
        yield _counter("tokenbrake_changelog_records", "State records written to the changelog topics", ["table"],
                       (((t,), n) for t, n in sorted(meter.changelog_records.items())))
        yield _gauge("tokenbrake_last_event_timestamp_seconds", "Event time of the latest counted event", [],
                     [((), engine["watermark_ms"] / 1000)])
        yield from self._sink()
        yield from self._consumer()
        yield from self._otlp()

    def _sink(self) -> Iterator[Metric]:
        sink = self.runtime.sink.stats()
        yield _gauge("tokenbrake_sink_buffered_rows", "Rows waiting to be written to ClickHouse", [],
                     [((), sink["buffered_rows"])])
        yield _gauge("tokenbrake_sink_oldest_buffered_seconds", "Age of the oldest row waiting for ClickHouse", [],
                     [((), sink["oldest_buffered_s"])])
        yield _counter("tokenbrake_sink_failures", "Failed ClickHouse writes (retried)", [], [((), sink["failures"])])
        yield _counter("tokenbrake_sink_rows_written", "Rows written to ClickHouse", [], [((), sink["rows_written"])])

    def _consumer(self) -> Iterator[Metric]:
        samples = [((topic, str(partition)), lag) for (topic, partition), lag in consumer_lag(self.runtime.app)]
        yield _gauge("tokenbrake_consumer_lag_messages", "Messages in the partition past the worker's committed "
                     "position", ["topic", "partition"], samples)

    def _otlp(self) -> Iterator[Metric]:
        translator = self.runtime.otlp
        if translator is None:
            return
        c = translator.counts
        yield _counter("tokenbrake_otlp_messages", "OTLP trace exports read", [], [((), c["messages"])])
        yield _counter("tokenbrake_otlp_spans", "OTLP spans read, by outcome", ["outcome"],
                       (((o,), c[o]) for o in ("counted", "not_inference", "no_usage", "rejected")))


def consumer_lag(app: Any) -> list[tuple[tuple[str, int], int]]:
    """Messages not yet committed, per assigned partition: the log end offset minus the
    committed position (Faust's; the read position for a partition never committed). Empty
    while not started or during a rebalance."""
    samples = []
    try:
        consumer = app.consumer
        positions = committed_positions(consumer)
        for tp in sorted(consumer.assignment()):
            end = consumer.highwater(tp)
            if end is None:
                continue
            done = positions.get(tp)  # the next offset to read (None: never committed, counted from 0)
            samples.append(((tp.topic, tp.partition), max(0, end - (done or 0))))
    except Exception:  # not started yet, or a rebalance under way: no sample this time
        log.debug("consumer lag unavailable", exc_info=True)
    return samples


def install_metrics(runtime: Any) -> CollectorRegistry:
    """Register ``/metrics`` on the runtime's web server; the registry holds the collector,
    the decision latency histogram and the standard process metrics."""
    registry = runtime.meter.registry
    registry.register(WorkerCollector(runtime))
    ProcessCollector(registry=registry)

    @runtime.app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
            return self.bytes(encoder(registry), headers={"Content-Type": content_type})

    return registry
