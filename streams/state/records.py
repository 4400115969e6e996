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
