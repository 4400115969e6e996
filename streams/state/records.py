"""Persisted values with a name and a version: what a changelog record of each kind holds.

Each type reads every version a release has written (the previous ones stay readable: a
worker upgraded mid-stream restores records its predecessor wrote) and writes the current
one. Positional lists are read only as the first version of a type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(slots=True)
class BudgetLevel:
    """A budget policy's level on one scope in one period (``state.keys.budget_key``): the
    number of thresholds crossed, the policy's fingerprint when it was set (an edited policy
    starts over), the scope as a control scope and the action in force (None: alert only).

    >>> BudgetLevel.read([20500, 1, "f", {"tenant_id": "t"}, None]).level  # version 1: a list
    1
    >>> record = BudgetLevel(20500, 2, "f", {"tenant_id": "t"}, ["block", None, None]).dump()
    >>> record["v"], BudgetLevel.read(record).wish
    (2, ['block', None, None])
    """

    VERSION: ClassVar[int] = 2
    period: int
    level: int
    fingerprint: str
    scope: dict[str, Any]
    wish: list[Any] | None

    def dump(self) -> dict[str, Any]:
        return {"v": self.VERSION, "period": self.period, "level": self.level, "fingerprint": self.fingerprint,
                "scope": self.scope, "wish": self.wish}

    @classmethod
    def read(cls, value: Any) -> BudgetLevel | None:
        if value is None:
            return None
        if isinstance(value, list):  # version 1: [period, level, fingerprint, scope, wish]
            period, level, fingerprint, scope, wish = value[:5]
            return cls(period, level, fingerprint, scope, wish)
        version = value.get("v")
        if version == 2:
            return cls(value["period"], value["level"], value["fingerprint"], value["scope"], value.get("wish"))
        raise ValueError(f"budget level record of unknown version {version!r}")

    def level_in(self, period: int) -> int:
        """The level in ``period`` (0 once the period has rolled over)."""
        return self.level if self.period == period else 0


class SpendTotals:
    """An aggregate bucket's totals (``state.keys`` bucket keys): eight counters, then the
    *position* of the last event added (:data:`streams.state.store.POS`).

    In memory the totals are a plain list ``[cost_nanos, requests, input, output, cached,
    reasoning, errors, retries, position]`` that the aggregation adds to in place (the hot
    path: a dozen lists per event). The persisted record names its parts and its version::

        {"v": 2, "counters": [the eight counters, in FIELDS order], "pos": position}

    Version 1 was the in-memory list itself (eight counters, or nine with the position).

    >>> SpendTotals.dump([5, 1, 10, 2, 0, 0, 0, 0, 42])
    {'v': 2, 'counters': [5, 1, 10, 2, 0, 0, 0, 0], 'pos': 42}
    >>> SpendTotals.read(SpendTotals.dump([5, 1, 10, 2, 0, 0, 0, 0, 42]))
    [5, 1, 10, 2, 0, 0, 0, 0, 42]
    >>> SpendTotals.read([5, 1, 10, 2, 0, 0, 0, 0])  # version 1, before positions: unknown
    [5, 1, 10, 2, 0, 0, 0, 0, -1]
    """

    VERSION: ClassVar[int] = 2
    FIELDS: ClassVar[tuple[str, ...]] = ("cost_nanos", "requests", "input_tokens", "output_tokens",
                                         "cached_input_tokens", "reasoning_tokens", "errors", "retries")

    @staticmethod
    def dump(totals: list[int]) -> dict[str, Any]:
        return {"v": 2, "counters": totals[:8], "pos": totals[8]}

    @staticmethod
    def read(value: Any) -> list[int]:
        if isinstance(value, dict):
            version = value.get("v")
            if version != 2:
                raise ValueError(f"spend totals record of unknown version {version!r}")
            return [*value["counters"], value["pos"]]
        if isinstance(value, list) and len(value) in (8, 9):  # version 1 (or already in memory)
            return value if len(value) == 9 else [*value, -1]
        raise ValueError(f"spend totals record of unknown shape: {value!r:.80}")


@dataclass(slots=True)
class CapAlert:
    """A per-request cost cap's alert on one tenant x feature x model and UTC day
    (``state.keys.cap_key``): fired once that day, resolved when the day is over.

    Version 1 was the same dict without ``v``; version 0 a bare day number (expired without a
    resolve).

    >>> CapAlert.read(20500).resolved, CapAlert.read({"day": 20500, "scope": ["t", "f", "m"],
    ...                                               "resolved": False}).scope
    (True, ['t', 'f', 'm'])
    """

    VERSION: ClassVar[int] = 2
    day: int
    scope: list[str] | None  # [tenant, feature, model]; None in version 0
    resolved: bool = False

    def dump(self) -> dict[str, Any]:
        return {"v": self.VERSION, "day": self.day, "scope": self.scope, "resolved": self.resolved}

    @classmethod
    def read(cls, value: Any) -> CapAlert:
        if isinstance(value, int):  # version 0: nothing left to resolve
            return cls(value, None, True)
        version = value.get("v", 1)
        if version not in (1, 2):
            raise ValueError(f"cap alert record of unknown version {version!r}")
        return cls(value["day"], value["scope"], value["resolved"])


@dataclass(slots=True)
class UnpricedModel:
    """A model missing from the price catalog, reported once (``state.keys.unpriced_key``).
    Version 1 was the first call's time alone (a bare number).

    >>> UnpricedModel.read(1_700_000_000_000) == UnpricedModel.read(UnpricedModel(1_700_000_000_000).dump())
    True
    """

    VERSION: ClassVar[int] = 2
    first_seen_ms: int

    def dump(self) -> dict[str, Any]:
        return {"v": self.VERSION, "first_seen_ms": self.first_seen_ms}

    @classmethod
    def read(cls, value: Any) -> UnpricedModel:
        if isinstance(value, int):
            return cls(value)
        if value.get("v") != 2:
            raise ValueError(f"unpriced model record of unknown version {value.get('v')!r}")
        return cls(value["first_seen_ms"])


@dataclass(slots=True)
class Baseline:
    """A detector's learned model on one (rule, scope) (``state.keys.baseline_key``): the
    River model pickled and sealed (HMAC, see ``decide.baselines``), the open incident (or
    None), the rule's parameters it was learned under, and when it was saved.
    Version 1 was the list ``[model, incident, params, saved_ms]``.

    >>> Baseline.read(["sealed", None, {"k": 1}, 5]) == Baseline.read(Baseline("sealed", None, {"k": 1}, 5).dump())
    True
    """

    VERSION: ClassVar[int] = 2
    model: str
    incident: list[Any] | None
    params: Any
    saved_ms: int

    def dump(self) -> dict[str, Any]:
        return {"v": self.VERSION, "model": self.model, "incident": self.incident, "params": self.params,
                "saved_ms": self.saved_ms}

    @classmethod
    def read(cls, value: Any) -> Baseline:
        if isinstance(value, list):
            return cls(*value[:4])
        if value.get("v") != 2:
            raise ValueError(f"baseline record of unknown version {value.get('v')!r}")
        return cls(value["model"], value["incident"], value["params"], value["saved_ms"])


class OperatorControl:
    """An operator's control in force on a scope (``state.keys.operator_key``): the signed
    ``ControlEvent`` as the control topic carried it (its own contract, ``schemas/control``),
    wrapped with the record's version. Version 1 was the control's dict alone.

    >>> OperatorControl.read(OperatorControl.dump({"control_id": "c"})), OperatorControl.read({"control_id": "c"})
    ({'control_id': 'c'}, {'control_id': 'c'})
    """

    VERSION: ClassVar[int] = 2

    @staticmethod
    def dump(control: dict[str, Any]) -> dict[str, Any]:
        return {"v": 2, "control": control}

    @staticmethod
    def read(value: dict[str, Any]) -> dict[str, Any]:
        if "control" not in value:  # version 1: the control itself (it has no "v" field)
            return value
        if value.get("v") != 2:
            raise ValueError(f"operator control record of unknown version {value.get('v')!r}")
        return value["control"]


@dataclass(slots=True)
class UserMonthsBegan:
    """The calendar month whose per-user totals began after users had spent in it (a budget
    per user and month added mid-month; ``state.keys.user_months_key``), so a later restart
    still knows that month's user totals are partial.

    >>> UserMonthsBegan.read(UserMonthsBegan(682).dump()).month
    682
    """

    VERSION: ClassVar[int] = 1
    month: int

    def dump(self) -> dict[str, Any]:
        return {"v": self.VERSION, "month": self.month}

    @classmethod
    def read(cls, value: Any) -> UserMonthsBegan:
        if value.get("v") != 1:
            raise ValueError(f"user months record of unknown version {value.get('v')!r}")
        return cls(value["month"])


#: a set-membership record (its key is the fact; e.g. a session counted in a period)
MARK: dict[str, int] = {"v": 1}
