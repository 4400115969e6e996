"""Price one call: overrides first, then the genai-prices catalog, else a loud fallback.

An unknown model is never free: it is priced at the fallback (by default the highest
price its provider charges for any model) and flagged ``priced=False`` so the engine
raises an ``unpriced_model`` alert once per model.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenbrake.streams.price.catalog import Catalog
from tokenbrake.streams.price.overrides import Overrides
from tokenbrake.streams.price.rates import ModelRates


@dataclass(frozen=True, slots=True)
class PricedCall:
    cost_nanos: int
    priced: bool  # False: the model is unknown and the fallback price was used


class PriceBook:
    def __init__(self, overrides: Overrides | None = None, fallback_model: str | None = None,
                 catalog: Catalog | None = None) -> None:
        self._catalog = catalog or Catalog()
        self._overrides = overrides or Overrides([])
        self._fallback_model = fallback_model  # "provider:model", or None for provider max

    def price(self, provider: str, model: str, ts_ms: int, input_tokens: int, output_tokens: int,
              cached: int = 0, cache_write: int = 0, model_version: str | None = None) -> PricedCall:
        rates = self.rates(provider, model, ts_ms, model_version)
        priced = rates is not None
        if rates is None:
            rates = self.fallback_rates(provider, ts_ms)
        return PricedCall(rates.cost_nanos(input_tokens, output_tokens, cached, cache_write), priced)

    def rates(self, provider: str, model: str, ts_ms: int, model_version: str | None = None) -> ModelRates | None:
        provider, model = provider.lower(), model.lower()
        for ref in ((model_version.lower(), model) if model_version else (model,)):
            rates = self._overrides.rates(provider, ref, ts_ms)
            if rates is None:
                rates = self._catalog.rates(provider, ref, ts_ms)
            if rates is not None:
                return rates
        return None

    def fallback_rates(self, provider: str, ts_ms: int) -> ModelRates:
        if self._fallback_model:
            fb_provider, _, fb_model = self._fallback_model.partition(":")
            rates = self.rates(fb_provider, fb_model, ts_ms)
            if rates is not None:
                return rates
        return self._catalog.provider_max(provider.lower(), ts_ms) or self._catalog.global_max(ts_ms)

    def knows_model(self, model: str) -> bool:
        """Whether a model named without a provider (a downgrade target) has a price: overrides or catalog."""
        return model.lower() in self._overrides.models() or self._catalog.knows(model.lower())

    def model_names(self) -> list[str]:
        return sorted(self._overrides.models() | set(self._catalog.model_ids()))

    def check_fallback(self) -> None:
        """Fail at start-up, not on the first unknown model, if the fallback is misconfigured."""
        if self._fallback_model:
            fb_provider, sep, fb_model = self._fallback_model.partition(":")
            if not sep or self.rates(fb_provider, fb_model, 0) is None and \
                    self.rates(fb_provider, fb_model, 2**41) is None:
                raise ValueError(f"fallback model {self._fallback_model!r} is not 'provider:model' in the catalog")
