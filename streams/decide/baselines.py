"""Detector baselines survive a restart.

A detector needs days of history (spend spikes: the same hour over 3 days, the trailing 7
days); held only in memory, every deploy would leave it blind that long. The hub marks each
(rule, scope) whose model learned or whose incident state changed; every few minutes (and
at shutdown) those are written to the decisions store, one key per (rule, scope), owned by
the tenant's partition so its changelog travels with the tenant:

    det|<rule>|<scope parts>  ->  a ``state.records.Baseline``: the sealed pickle of the model,
                                  the open incident or None, the rule's parameters, saved at (ms)

Models are River objects, so the state is a pickle, sealed with the control signing key
(HMAC): a record that does not verify, or was learned under other parameters, is skipped
and that model starts afresh. Records not refreshed for ``KEEP_MS`` are dropped.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from typing import Any

from tokenbrake.schemas.codec import dumps, loads
from tokenbrake.schemas.signing import Sealer
from tokenbrake.streams.decide.detection import DetectorHub
from tokenbrake.streams.state.keys import BASELINE, baseline_key, parse_baseline_key
from tokenbrake.streams.state.records import Baseline
from tokenbrake.streams.state.store import Store

KEEP_MS = 14 * 86_400_000
log = logging.getLogger("tokenbrake.baselines")


class BaselineKeeper:
    def __init__(self, hub: DetectorHub, store: Store, sealer: Sealer) -> None:
        self.hub, self.store, self.sealer = hub, store, sealer

    def _params(self, rule: str) -> Any:
        return loads(dumps(self.hub.config[rule].params))  # as they read back from the changelog

    def save(self, now_ms: int, partition_of_tenant: Callable[[str], int]) -> int:
        """Write every model marked since the last save. Returns how many were written."""
        hub, written = self.hub, 0
        for rule, scope in hub.dirty:
            model = hub.models.get((rule, scope))
            if model is None:
                continue
            partition = partition_of_tenant(scope[0])
            active = hub.active.get((rule, scope))
            record = Baseline(self.sealer.seal(pickle.dumps(model)), list(active) if active else None,
                              self._params(rule), now_ms)
            self.store.set(baseline_key(rule, scope), record.dump(), partition)
            written += 1
        hub.dirty.clear()
        return written

    def load(self) -> int:
        """Give the hub the models persisted before a restart. Returns how many were restored."""
        restored = skipped = 0
        for key, value in self.store.items():
            if not key.startswith(BASELINE):
                continue
            rule, scope = parse_baseline_key(key)
            record = Baseline.read(value)
            if rule not in self.hub.config or not self.hub.config[rule].enabled or record.params != self._params(rule):
                skipped += 1  # rule gone, disabled, or re-parameterised: learn afresh
                continue
            blob = self.sealer.open(record.model)
            if blob is None:
                skipped += 1
                continue
            self.hub.models[(rule, scope)] = pickle.loads(blob)  # noqa: S301 - sealed by this deployment
            if record.incident is not None:
                self.hub.active[(rule, scope)] = list(record.incident)
            restored += 1
        if skipped:
            log.warning("detector baselines not restored (bad seal, rule changed or removed): they learn afresh",
                        extra={"skipped": skipped, "restored": restored})
        return restored

    def expire(self, now_ms: int) -> None:
        for key in [k for k, v in self.store.items()
                    if k.startswith(BASELINE) and Baseline.read(v).saved_ms < now_ms - KEEP_MS]:
            self.store.delete(key)
