"""Every model a policies file names must be one tokenbrake can price, checked at start-up.

A downgrade target (``to_model`` in a budget step or the ``cost_rate`` detector) is what
services are told to call: a typo (``gpt-4o-mni``) would send them to a model that does not
exist. So each model named in the file (downgrade targets and ``scope.model``) must be in the
price catalog or the price overrides, or be listed under ``private_models:`` (the explicit
opt-out for self-hosted or private deployments). Errors name file, line and field. A
``tier:`` not in the file's ``tiers:`` list (default: free, pro, team, business, enterprise)
only warns: tiers come from the events, so a new one is legitimate, a typo is not.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from tokenbrake.streams.decide.detection import COST_RATE_DEFAULT_TARGET
from tokenbrake.streams.decide.policies import PoliciesFile
from tokenbrake.streams.yaml_files import line_of

DEFAULT_TIERS = ("free", "pro", "team", "business", "enterprise")


@dataclass
class NamedModelsCheck:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def named_models(policies: PoliciesFile) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(location in the file, model) for every model the policies name."""
    for budget_index, budget in enumerate(policies.budgets):
        if budget.scope.model not in (None, "*"):
            yield ("budgets", budget_index, "scope", "model"), budget.scope.model
        if budget.action is not None and budget.action.to_model:
            yield ("budgets", budget_index, "action", "to_model"), budget.action.to_model
        for step_index, step in enumerate(budget.on_exceed):
            if step.to_model:
                yield ("budgets", budget_index, "on_exceed", step_index, "to_model"), step.to_model
    for cap_index, cap in enumerate(policies.request_cost_caps):
        if cap.scope.model not in (None, "*"):
            yield ("request_cost_caps", cap_index, "scope", "model"), cap.scope.model
    for unit_index, unit in enumerate(policies.unit_costs):
        if unit.action is not None and unit.action.to_model:
            yield ("unit_costs", unit_index, "action", "to_model"), unit.action.to_model
    cost_rate = policies.detectors.get("cost_rate") or {}
    if cost_rate.get("enabled", True) and cost_rate.get("action", "downgrade") == "downgrade":
        yield ("detectors", "cost_rate", "to_model"), str(cost_rate.get("to_model", COST_RATE_DEFAULT_TARGET))


def named_tiers(policies: PoliciesFile) -> Iterator[tuple[tuple[Any, ...], str]]:
    for kind, items in (("budgets", policies.budgets), ("request_cost_caps", policies.request_cost_caps)):
        for item_index, item in enumerate(items):
            if item.scope.tier is not None:
                yield (kind, item_index, "scope", "tier"), item.scope.tier


def check_named_models(policies: PoliciesFile, text: str, source: str, knows: Callable[[str], bool],
                       all_models: Callable[[], list[str]]) -> NamedModelsCheck:
    """``knows(model)``: the price book prices it; ``all_models()``: names to suggest from."""
    root = yaml.compose(text) if text.strip() else None
    check = NamedModelsCheck()
    private = {m.lower() for m in policies.private_models}

    def where(loc: tuple[Any, ...]) -> str:
        line = line_of(root, loc) if root is not None else 1
        return f"{source}:{line}: {'.'.join(map(str, loc))}"

    for loc, model in named_models(policies):
        if model.lower() in private or knows(model):
            continue
        close = difflib.get_close_matches(model.lower(), all_models(), n=1, cutoff=0.8)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        check.errors.append(f"{where(loc)}: unknown model {model!r}: not in the price catalog nor the price "
                            f"overrides{hint} (a private model: list it under private_models:)")
    tiers = set(policies.tiers or DEFAULT_TIERS)
    for loc, tier in named_tiers(policies):
        if tier not in tiers:
            close = difflib.get_close_matches(tier, sorted(tiers), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            check.warnings.append(f"{where(loc)}: tier {tier!r} is not one of {sorted(tiers)}{hint} "
                                  "(declare your tiers under tiers: to silence this)")
    return check


def check_policies_file(policies_path: Any, overrides_path: Any = None) -> NamedModelsCheck:
    """Load the policies and price overrides files the settings name and check them (start-up)."""
    from pathlib import Path

    from tokenbrake.streams.decide.policies import load_policies
    from tokenbrake.streams.price.overrides import Overrides
    from tokenbrake.streams.price.pricebook import PriceBook

    if policies_path is None:
        return NamedModelsCheck()
    policies = load_policies(policies_path)
    book = PriceBook(Overrides.load(overrides_path))
    return check_named_models(policies, Path(policies_path).read_text(), str(policies_path), book.knows_model,
                              book.model_names)


def report_named_models(policies_path: Any, overrides_path: Any = None) -> bool:
    """Start-up: print the warnings, and the errors in one block; False when there were errors."""
    import sys

    check = check_policies_file(policies_path, overrides_path)
    for warning in check.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if check.errors:
        print("invalid policies file:\n  " + "\n  ".join(check.errors), file=sys.stderr)
    return not check.errors
