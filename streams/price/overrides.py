"""Local price overrides: negotiated discounts, self-hosted models, private deployments.

File format (YAML)::

    prices:
      - provider: self-hosted
        model: llama-3-70b
        input_mtok: "0.20"          # USD per million input tokens (decimal string)
        output_mtok: "0.60"
        cache_read_mtok: "0.10"     # optional, defaults to input_mtok
        cache_write_mtok: "0.25"    # optional, defaults to input_mtok
        effective_from: 2026-01-01  # optional; the latest entry in force wins
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from tokenbrake.schemas.common import no_float
from tokenbrake.streams.price.rates import ModelRates, TokenRates, mtok_to_femto

Price = Annotated[Decimal, BeforeValidator(no_float), Field(ge=0)]


class PriceOverride(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    model: str
    input_mtok: Price
    output_mtok: Price
    cache_read_mtok: Price | None = None
    cache_write_mtok: Price | None = None
    effective_from: date | None = None

    def rates(self) -> ModelRates:
        read = self.input_mtok if self.cache_read_mtok is None else self.cache_read_mtok
        write = self.input_mtok if self.cache_write_mtok is None else self.cache_write_mtok
        return ModelRates(TokenRates(mtok_to_femto(self.input_mtok), mtok_to_femto(self.output_mtok),
                                     mtok_to_femto(read), mtok_to_femto(write)))

    def starts_ms(self) -> int:
        if self.effective_from is None:
            return 0
        start = datetime(self.effective_from.year, self.effective_from.month, self.effective_from.day, tzinfo=UTC)
        return int(start.timestamp() * 1000)


class PriceOverridesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prices: list[PriceOverride] = []


class Overrides:
    def __init__(self, entries: list[PriceOverride]) -> None:
        self._by_model: dict[tuple[str, str], list[tuple[int, ModelRates]]] = {}
        for entry in entries:
            key = (entry.provider.lower(), entry.model.lower())
            self._by_model.setdefault(key, []).append((entry.starts_ms(), entry.rates()))
        for versions in self._by_model.values():
            versions.sort(key=lambda item: item[0])

    def rates(self, provider: str, model: str, ts_ms: int) -> ModelRates | None:
        versions = self._by_model.get((provider, model))
        if not versions:
            return None
        chosen = None
        for starts, rates in versions:
            if starts <= ts_ms:
                chosen = rates
        return chosen

    def models(self) -> set[str]:
        """Every model named in the overrides (lower case), whatever its provider."""
        return {model for _, model in self._by_model}

    @classmethod
    def load(cls, path: Path | None) -> Overrides:
        if path is None:
            return cls([])
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
            return cls(PriceOverridesFile.model_validate(doc).prices)
        except (OSError, yaml.YAMLError, ValidationError) as exc:
            raise ValueError(f"price overrides file {path}: {exc}") from exc
