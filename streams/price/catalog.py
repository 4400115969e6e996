"""Rates from the genai-prices catalog, effective-dated by the event's time, converted once and cached.

Nothing here reads a clock: a backtest of last year's events is priced at last year's prices,
the fallback for an unknown model (the highest price among a provider's models) included.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from genai_prices import data_snapshot
from genai_prices.types import ModelPrice, TieredPrices

from tokenbrake.streams.price.rates import ModelRates, TokenRates, mtok_to_femto

MAX_EVERY_MS = 3_600_000  # the fallback's maxima are taken once per hour of event time
_FIELDS = {"input": "input_mtok", "output": "output_mtok", "cache_read": "cache_read_mtok",
           "cache_write": "cache_write_mtok"}


def _at(value: Decimal | TieredPrices | None, tokens: int) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    price = value.base
    for tier in value.tiers:
        if tokens > tier.start:
            price = tier.price
    return price


def rates_from_model_price(mp: ModelPrice) -> ModelRates:
    """Convert a genai-prices ModelPrice (possibly tiered) to integer rates."""
    raw = {name: getattr(mp, attr, None) for name, attr in _FIELDS.items()}
    thresholds = sorted({t.start for v in raw.values() if isinstance(v, TieredPrices) for t in v.tiers})

    def rates_at(tokens: int) -> TokenRates:
        inp = _at(raw["input"], tokens) or Decimal(0)
        out = _at(raw["output"], tokens) or Decimal(0)
        read = _at(raw["cache_read"], tokens)
        write = _at(raw["cache_write"], tokens)
        return TokenRates(mtok_to_femto(inp), mtok_to_femto(out),
                          mtok_to_femto(inp if read is None else read),
                          mtok_to_femto(inp if write is None else write))

    return ModelRates(rates_at(0), tuple((t, rates_at(t + 1)) for t in thresholds))


class Catalog:
    """Lookups into the genai-prices snapshot shipped with the package (no network)."""

    def __init__(self) -> None:
        self._snapshot = data_snapshot.get_snapshot()
        self._models: dict[tuple[str, str], Any] = {}
        self._static: dict[tuple[str, str], ModelRates] = {}
        self._dated: dict[tuple[str, str, int], ModelRates] = {}
        self._provider_max: dict[tuple[str, int], ModelRates | None] = {}  # (provider or *, hour) -> rates

    def rates(self, provider: str, model: str, ts_ms: int) -> ModelRates | None:
        """Rates in force at ``ts_ms``, or None when the catalog does not know the model."""
        key = (provider, model)
        static = self._static.get(key)
        if static is not None:
            return static
        info = self._models.get(key, False)
        if info is False:
            info = self._lookup(provider, model)
            self._models[key] = info
        if info is None:
            return None
        if not isinstance(info.prices, list):  # one price for all time: convert once
            self._static[key] = rates = rates_from_model_price(info.prices)
            return rates
        minute = ts_ms // 60_000  # conditional prices (start dates, time of day): per minute
        dated_key = (provider, model, minute)
        rates = self._dated.get(dated_key)
        if rates is None:
            if len(self._dated) > 50_000:
                self._dated.clear()
            when = datetime.fromtimestamp(minute * 60, tz=UTC)
            rates = self._dated[dated_key] = rates_from_model_price(info.get_prices(when))
        return rates

    def _lookup(self, provider: str, model: str) -> Any:
        try:
            return self._snapshot.find_provider_model(model, None, provider, None)[1]
        except LookupError:
            return None

    def knows(self, model: str) -> bool:
        """Whether any provider of the catalog prices ``model`` (a name in a policies file has no provider)."""
        try:
            self._snapshot.find_provider_model(model, None, None, None)
            return True
        except LookupError:
            pass
        for prov in self._snapshot.providers:
            try:
                self._snapshot.find_provider_model(model, None, prov.id, None)
                return True
            except LookupError:
                continue
        return False

    def model_ids(self) -> list[str]:
        """Every model id in the catalog: suggestions for a misspelled name."""
        return sorted({info.id for prov in self._snapshot.providers for info in prov.models})

    def provider_max(self, provider: str, ts_ms: int) -> ModelRates | None:
        """The highest price of each token kind among ``provider``'s models in force at ``ts_ms``
        (computed once per hour of event time: it reads every model of the provider)."""
        return self._max_at(provider, ts_ms)

    def global_max(self, ts_ms: int) -> ModelRates:
        """:meth:`provider_max` over every provider of the catalog."""
        rates = self._max_at("*", ts_ms)
        assert rates is not None
        return rates

    def _max_at(self, provider: str, ts_ms: int) -> ModelRates | None:
        key = (provider, ts_ms // MAX_EVERY_MS)
        if key not in self._provider_max:
            if len(self._provider_max) > 10_000:
                self._provider_max.clear()
            providers = self._snapshot.providers if provider == "*" else \
                [p for p in self._snapshot.providers if p.id == provider]
            self._provider_max[key] = self._max_over(providers, key[1] * MAX_EVERY_MS)
        return self._provider_max[key]

    @staticmethod
    def _max_over(providers: list[Any], at_ms: int) -> ModelRates | None:
        when = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
        best: TokenRates | None = None
        for prov in providers:
            for info in prov.models:
                try:
                    base = rates_from_model_price(info.get_prices(when)).base
                except (ValueError, TypeError):
                    continue
                best = base if best is None else best.max(base)
        return None if best is None else ModelRates(best)
