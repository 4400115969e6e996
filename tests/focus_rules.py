"""A schema check of a FOCUS 1.2 file against the column rules that matter to a loader (the
FinOps Foundation's validator is not installed here): every column present, non-null where
the spec says so for usage rows, allowed values, ISO 8601 UTC dates, decimals without
exponent, ListCost = ListUnitPrice x PricingQuantity, custom columns prefixed x_."""

from __future__ import annotations

import csv
import json
import re
from decimal import Decimal
from pathlib import Path

from tokenbrake.streams.finops.focus import FOCUS_COLUMNS

NOT_NULL = ["BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
            "BillingPeriodStart", "ChargeCategory", "ChargeDescription", "ChargeFrequency", "ChargePeriodEnd",
            "ChargePeriodStart", "ConsumedQuantity", "ConsumedUnit", "ContractedCost", "ContractedUnitPrice",
            "EffectiveCost", "InvoiceIssuerName", "ListCost", "ListUnitPrice", "PricingCategory", "PricingQuantity",
            "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName", "ServiceSubcategory",
            "SkuId", "SkuPriceId", "SubAccountId", "SubAccountName"]
ALLOWED = {
    "ChargeCategory": {"Usage", "Purchase", "Tax", "Credit", "Adjustment"},
    "ChargeClass": {"", "Correction"},
    "ChargeFrequency": {"One-Time", "Recurring", "Usage-Based"},
    "PricingCategory": {"Standard", "Dynamic", "Committed", "Other"},
    "ServiceCategory": {"AI and Machine Learning", "Analytics", "Business Applications", "Compute", "Databases",
                        "Developer Tools", "Multicloud", "Identity", "Integration", "Internet of Things",
                        "Management and Governance", "Media", "Migration", "Mobile", "Networking", "Security",
                        "Storage", "Web", "Other"},
}
DECIMALS = ["BilledCost", "ContractedCost", "EffectiveCost", "ListCost", "ListUnitPrice", "ContractedUnitPrice",
            "PricingQuantity", "ConsumedQuantity", "PricingCurrencyListUnitPrice",
            "PricingCurrencyContractedUnitPrice", "PricingCurrencyEffectiveCost"]
DATES = ["BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd", "ChargePeriodStart"]
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def problems(rows: list[dict[str, str]], header: list[str]) -> list[str]:
    out = [f"missing column {c}" for c in FOCUS_COLUMNS if c not in header]
    out += [f"custom column without x_: {c}" for c in header if c not in FOCUS_COLUMNS and not c.startswith("x_")]
    for i, row in enumerate(rows):
        where = f"row {i + 2}"
        out += [f"{where}: {c} is null" for c in NOT_NULL if not row[c]]
        out += [f"{where}: {c}={row[c]!r} not allowed" for c, ok in ALLOWED.items() if row[c] not in ok]
        out += [f"{where}: {c}={row[c]!r} not a plain decimal" for c in DECIMALS
                if row[c] and not _DECIMAL.match(row[c])]
        out += [f"{where}: {c}={row[c]!r} not ISO 8601 UTC" for c in DATES if not _ISO.match(row[c])]
        out += [f"{where}: {c} not ISO 4217" for c in ("BillingCurrency", "PricingCurrency")
                if not _CURRENCY.match(row[c])]
        if out:
            break
        if row["ChargePeriodEnd"] <= row["ChargePeriodStart"] or row["BillingPeriodEnd"] <= row["BillingPeriodStart"]:
            out.append(f"{where}: a period ends before it starts")
        if not row["BillingPeriodStart"] <= row["ChargePeriodStart"] < row["BillingPeriodEnd"]:
            out.append(f"{where}: charge period outside its billing period")
        quantity, price = Decimal(row["PricingQuantity"]), Decimal(row["ListUnitPrice"])
        if Decimal(row["ListCost"]) != price * quantity:
            out.append(f"{where}: ListCost != ListUnitPrice x PricingQuantity")
        if Decimal(row["ContractedCost"]) != Decimal(row["ContractedUnitPrice"]) * quantity:
            out.append(f"{where}: ContractedCost != ContractedUnitPrice x PricingQuantity")
        tags = json.loads(row["Tags"] or "{}")
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            out.append(f"{where}: Tags is not a JSON object of strings")
    return out


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows
