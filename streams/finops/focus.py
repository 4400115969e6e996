"""FinOps FOCUS 1.2 rows of the rollups: what a FinOps tool (Vantage's custom-provider
upload, the FinOps Foundation's validator) loads as a cost and usage dataset.

One row per charge period x tenant x feature x model x environment x prompt version x token
type (input, cached input, cache write, output): each token type has its own ``SkuPriceId``
(the unit price is part of it). Quantities are tokens; unit prices are USD per token, exact
decimals; ``ListCost = ListUnitPrice x PricingQuantity`` exactly. tokenbrake knows list (or
overridden, negotiated) prices, not invoices: Billed, Effective, Contracted and List cost are
the same amount. Rates are the base-tier rates of the day (:mod:`streams.finops.model_rates`).

FOCUS 1.3 names that differ: it adds ``ServiceProviderName`` and ``HostProviderName`` and
deprecates ``ProviderName`` and ``PublisherName`` (still mandatory in 1.3, so a 1.3 file carries
both pairs); 1.3 also adds ``ContractApplied``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

#: every FOCUS 1.2 column (mandatory, and the conditional ones, present with null where they
#: do not apply), in the order written; custom columns follow, prefixed x_
FOCUS_COLUMNS = [
    "AvailabilityZone", "BilledCost", "BillingAccountId", "BillingAccountName", "BillingAccountType",
    "BillingCurrency", "BillingPeriodEnd", "BillingPeriodStart", "CapacityReservationId",
    "CapacityReservationStatus", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargeFrequency",
    "ChargePeriodEnd", "ChargePeriodStart", "CommitmentDiscountCategory", "CommitmentDiscountId",
    "CommitmentDiscountName", "CommitmentDiscountQuantity", "CommitmentDiscountStatus", "CommitmentDiscountType",
    "CommitmentDiscountUnit", "ConsumedQuantity", "ConsumedUnit", "ContractedCost", "ContractedUnitPrice",
    "EffectiveCost", "InvoiceId", "InvoiceIssuerName", "ListCost", "ListUnitPrice", "PricingCategory",
    "PricingCurrency", "PricingCurrencyContractedUnitPrice", "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice", "PricingQuantity", "PricingUnit", "ProviderName", "PublisherName", "RegionId",
    "RegionName", "ResourceId", "ResourceName", "ResourceType", "ServiceCategory", "ServiceName",
    "ServiceSubcategory", "SkuId", "SkuMeter", "SkuPriceDetails", "SkuPriceId", "SubAccountId", "SubAccountName",
    "SubAccountType", "Tags",
]
CUSTOM_COLUMNS = ["x_TenantTier", "x_FeatureId", "x_Environment", "x_PromptVersion", "x_Model", "x_TokenType"]
COLUMNS = FOCUS_COLUMNS + CUSTOM_COLUMNS
MONEY_COLUMNS = {"BilledCost", "ContractedCost", "EffectiveCost", "ListCost", "PricingCurrencyEffectiveCost"}
PRICE_COLUMNS = {"ContractedUnitPrice", "ListUnitPrice", "PricingCurrencyContractedUnitPrice",
                 "PricingCurrencyListUnitPrice"}
QUANTITY_COLUMNS = {"ConsumedQuantity", "PricingQuantity"}
DATE_COLUMNS = {"BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd", "ChargePeriodStart"}

#: token type -> (quantity column of the query, rate column of model_rates)
TOKEN_TYPES = {"input": "uncached_input", "cached input": "cached_input_tokens",
               "cache write": "cache_write_tokens", "output": "output_tokens"}
_RATE_OF = {"input": "input_usd", "cached input": "cache_read_usd", "cache write": "cache_write_usd",
            "output": "output_usd"}

_SQL = """
SELECT {period} AS period, u.tenant_id, u.feature_id, u.provider, u.model, u.environment, u.prompt_version,
       u.region, u.tenant_tier,
       sum(u.input_tokens - u.cached_input_tokens - u.cache_write_tokens) AS uncached_input,
       sum(u.cached_input_tokens) AS cached_input_tokens, sum(u.cache_write_tokens) AS cache_write_tokens,
       sum(u.output_tokens) AS output_tokens,
       any(r.input_usd) AS input_usd, any(r.cache_read_usd) AS cache_read_usd,
       any(r.cache_write_usd) AS cache_write_usd, any(r.output_usd) AS output_usd
FROM (SELECT * FROM {db}.{table} FINAL WHERE {column} >= %(lo)s AND {column} < %(hi)s) AS u
INNER JOIN (SELECT * FROM {db}.model_rates FINAL) AS r
    ON r.provider = u.provider AND r.model = u.model AND r.day = toDate(u.{column})
GROUP BY period, u.tenant_id, u.feature_id, u.provider, u.model, u.environment, u.prompt_version, u.region,
         u.tenant_tier
ORDER BY period, u.tenant_id, u.feature_id, u.model, u.environment, u.prompt_version
"""


def focus_sql(db: str, granularity: str) -> str:
    if granularity == "hour":
        return _SQL.format(period="u.hour", db=db, table="usage_hourly", column="hour")
    return _SQL.format(period="toDateTime(u.day, 'UTC')", db=db, table="usage_daily", column="day")


def iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def _month(ts: datetime) -> tuple[datetime, datetime]:
    start = ts.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, (start + timedelta(days=32)).replace(day=1)


def plain(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros, as FOCUS loaders parse it.

    >>> plain(Decimal("2.5E-6")), plain(Decimal("12.000")), plain(Decimal("0.000000000"))
    ('0.0000025', '12', '0')
    """
    return format(value.normalize(), "f")


def focus_rows(client: Any, db: str, start: datetime, end: datetime, granularity: str = "day") \
        -> Iterator[dict[str, Any]]:
    """FOCUS rows of [start, end) (dates at whole days or hours), token types with no tokens omitted."""
    step = timedelta(hours=1) if granularity == "hour" else timedelta(days=1)
    lo: Any = start.replace(tzinfo=None) if granularity == "hour" else start.date()
    hi: Any = end.replace(tzinfo=None) if granularity == "hour" else end.date()
    result = client.query(focus_sql(db, granularity), parameters={"lo": lo, "hi": hi})
    for row in result.named_results():
        period: datetime = row["period"]
        billing_start, billing_end = _month(period)
        provider, model = row["provider"], row["model"]
        for token_type, quantity_column in TOKEN_TYPES.items():
            quantity = int(row[quantity_column])
            if quantity <= 0:
                continue
            price = Decimal(row[_RATE_OF[token_type]]).normalize()
            cost = price * quantity  # exact: Decimal multiplication of an integer
            sku = f"{provider}/{model}/{token_type.replace(' ', '-')}"
            tags = {"feature": row["feature_id"], "environment": row["environment"],
                    "prompt_version": row["prompt_version"]}
            yield {
                "AvailabilityZone": None, "BilledCost": cost, "BillingAccountId": provider,
                "BillingAccountName": provider, "BillingAccountType": "Provider Account", "BillingCurrency": "USD",
                "BillingPeriodEnd": billing_end, "BillingPeriodStart": billing_start, "CapacityReservationId": None,
                "CapacityReservationStatus": None, "ChargeCategory": "Usage", "ChargeClass": None,
                "ChargeDescription": f"{model} {token_type} tokens", "ChargeFrequency": "Usage-Based",
                "ChargePeriodEnd": period + step, "ChargePeriodStart": period,
                "CommitmentDiscountCategory": None, "CommitmentDiscountId": None, "CommitmentDiscountName": None,
                "CommitmentDiscountQuantity": None, "CommitmentDiscountStatus": None,
                "CommitmentDiscountType": None, "CommitmentDiscountUnit": None, "ConsumedQuantity": quantity,
                "ConsumedUnit": "Tokens", "ContractedCost": cost, "ContractedUnitPrice": price,
                "EffectiveCost": cost, "InvoiceId": None, "InvoiceIssuerName": provider, "ListCost": cost,
                "ListUnitPrice": price, "PricingCategory": "Standard", "PricingCurrency": "USD",
                "PricingCurrencyContractedUnitPrice": price, "PricingCurrencyEffectiveCost": cost,
                "PricingCurrencyListUnitPrice": price, "PricingQuantity": quantity, "PricingUnit": "Tokens",
                "ProviderName": provider, "PublisherName": provider, "RegionId": row["region"] or None,
                "RegionName": row["region"] or None, "ResourceId": f"{provider}/{model}", "ResourceName": model,
                "ResourceType": "Generative AI Model", "ServiceCategory": "AI and Machine Learning",
                "ServiceName": f"{provider} API", "ServiceSubcategory": "Generative AI", "SkuId": sku,
                "SkuMeter": f"{token_type} tokens",
                "SkuPriceDetails": orjson.dumps({"x_TokenType": token_type, "x_UsdPerToken": plain(price)}).decode(),
                "SkuPriceId": f"{sku}@{plain(price)}", "SubAccountId": row["tenant_id"],
                "SubAccountName": row["tenant_id"], "SubAccountType": "Tenant",
                "Tags": orjson.dumps({k: v for k, v in tags.items() if v}).decode(),
                "x_TenantTier": row["tenant_tier"] or None, "x_FeatureId": row["feature_id"],
                "x_Environment": row["environment"] or None, "x_PromptVersion": row["prompt_version"] or None,
                "x_Model": model, "x_TokenType": token_type,
            }
