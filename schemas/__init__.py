"""Event contracts shared by the worker and the service clients (no Faust here)."""

from tokenbrake.schemas.control import ACTION_RANK, AlertEvent, ControlEvent, Reason, Scope, scope_key
from tokenbrake.schemas.usage import UsageEvent

__all__ = ["ACTION_RANK", "AlertEvent", "ControlEvent", "Reason", "Scope", "UsageEvent", "scope_key"]
