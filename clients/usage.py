"""Map SDK usage objects to UsageEvent token fields, without importing any SDK.

Both helpers accept the SDK's object or its dict form and return keyword arguments for
:meth:`UsageReporter.record`, following tokenbrake's convention: ``input_tokens`` includes
cached and cache-write tokens, ``output_tokens`` includes reasoning tokens.
"""

from __future__ import annotations

from typing import Any


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(value: Any) -> int:
    return int(value or 0)


def from_openai_usage(usage: Any) -> dict[str, int]:
    """OpenAI Chat Completions (prompt/completion tokens) or Responses API (input/output tokens)."""
    if _get(usage, "prompt_tokens") is not None or _get(usage, "completion_tokens") is not None:
        inp, out = _int(_get(usage, "prompt_tokens")), _int(_get(usage, "completion_tokens"))
        in_details, out_details = _get(usage, "prompt_tokens_details"), _get(usage, "completion_tokens_details")
    else:
        inp, out = _int(_get(usage, "input_tokens")), _int(_get(usage, "output_tokens"))
        in_details, out_details = _get(usage, "input_tokens_details"), _get(usage, "output_tokens_details")
    return {"input_tokens": inp, "output_tokens": out,
            "cached_input_tokens": min(inp, _int(_get(in_details, "cached_tokens"))),
            "reasoning_tokens": min(out, _int(_get(out_details, "reasoning_tokens")))}


def from_anthropic_usage(usage: Any) -> dict[str, int]:
    """Anthropic Messages: ``input_tokens`` there excludes cache reads and cache writes."""
    read = _int(_get(usage, "cache_read_input_tokens"))
    write = _int(_get(usage, "cache_creation_input_tokens"))
    return {"input_tokens": _int(_get(usage, "input_tokens")) + read + write,
            "output_tokens": _int(_get(usage, "output_tokens")),
            "cached_input_tokens": read, "cache_write_tokens": write}
