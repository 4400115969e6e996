"""The one JSON codec: orjson options live here and nowhere else."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

_OPTS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", exclude_none=True)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any) -> bytes:
    """Serialise to compact JSON bytes. Decimals become strings (money is never a float)."""
    return orjson.dumps(obj, default=_default, option=_OPTS)


def dumps_canonical(obj: Any) -> bytes:
    """Deterministic bytes (sorted keys), used for signatures and content hashes."""
    return orjson.dumps(obj, default=_default, option=_OPTS | orjson.OPT_SORT_KEYS)


loads = orjson.loads
JSONDecodeError = orjson.JSONDecodeError
