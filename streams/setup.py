"""Assembling the pure core from the settings; no Faust, no Kafka (the backtest uses it too)."""

from __future__ import annotations

from collections.abc import Callable

from tokenbrake.schemas.signing import Sealer
from tokenbrake.streams.decide.policies import load_policies
from tokenbrake.streams.engine import Engine, EngineConfig
from tokenbrake.streams.price.overrides import Overrides
from tokenbrake.streams.price.pricebook import PriceBook
from tokenbrake.streams.settings import Settings


def build_engine(settings: Settings, clock: Callable[[], int] | None = None,
                 tenant_partition: Callable[[str], int] | None = None) -> Engine:
    """The core as the settings describe it (policies, prices, dedupe bounds, sealing key): the
    worker's (with the wall clock and its tenant routing) and the backtest's (event time)."""
    policies = load_policies(settings.policies_path)
    pricebook = PriceBook(Overrides.load(settings.price_overrides_path), settings.unpriced_fallback_model)
    pricebook.check_fallback()
    config = EngineConfig(dedupe_horizon_minutes=settings.dedupe_horizon_minutes,
                          dedupe_max_entries=settings.dedupe_max_entries, max_future_ms=settings.max_future_s * 1000,
                          user_month_totals=settings.user_month_totals)
    key_id, secret = settings.signing_key
    # sealed pickles are only as trustworthy as the key: with the public development key,
    # detector baselines stay in memory (anyone could forge a record the worker would unpickle)
    sealer = None if settings.uses_dev_key else Sealer(key_id, secret, settings.keyring)
    return Engine(policies, pricebook, config, clock=clock, sealer=sealer, tenant_partition=tenant_partition)
