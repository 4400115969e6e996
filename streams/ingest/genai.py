"""What an OpenTelemetry GenAI span says about one inference call: kind, model, tokens.

Producers disagree on names; each family below is tried in order, first found wins:

=================  ==================================================================================
input              ``gen_ai.usage.input_tokens``, ``gen_ai.usage.prompt_tokens`` (older semconv,
                   OpenLLMetry), ``llm.token_count.prompt`` (OpenInference)
output             ``gen_ai.usage.output_tokens``, ``gen_ai.usage.completion_tokens``,
                   ``llm.token_count.completion``
cache reads        ``gen_ai.usage.cache_read.input_tokens`` (current), ``gen_ai.usage.cache_read_input_tokens``
                   (legacy, OpenLLMetry), ``gen_ai.usage.details.cache_read_tokens`` (Pydantic AI / Logfire),
                   ``llm.token_count.prompt_details.cache_read``
cache writes       ``gen_ai.usage.cache_creation.input_tokens``, ``gen_ai.usage.cache_creation_input_tokens``,
                   ``gen_ai.usage.details.cache_write_tokens``, ``llm.token_count.prompt_details.cache_write``
reasoning          ``gen_ai.usage.reasoning.output_tokens``, ``gen_ai.usage.reasoning_tokens``,
                   ``gen_ai.usage.details.reasoning_tokens``, ``llm.token_count.completion_details.reasoning``
model              ``gen_ai.response.model`` over ``gen_ai.request.model`` over ``llm.model_name``
provider           ``gen_ai.provider.name``, ``gen_ai.system`` (older), ``llm.provider``, ``llm.system``
=================  ==================================================================================

Token convention (OpenTelemetry's and tokenbrake's): input includes cache reads and writes,
output includes reasoning, so each token is priced once. A producer that reports
cache-miss-only input (or output without reasoning) is recognised two ways: (1) its
numbers cannot be inclusive (cache reads + writes > input; reasoning > output), or
(2) it is named in the settings (``TOKENBRAKE_OTLP_INPUT_EXCLUDES_CACHE`` /
``TOKENBRAKE_OTLP_OUTPUT_EXCLUDES_REASONING``: instrumentation scope name prefixes, or
``provider:NAME``). Either way the parts are added back, never under-counted.

Only inference spans are counted: ``gen_ai.operation.name`` chat, text_completion,
generate_content, embeddings (or the older completion, embedding); without it OpenLLMetry's
``llm.request.type`` or OpenInference's ``openinference.span.kind`` (LLM, EMBEDDING).
Agent, workflow, tool and chain spans are not, even when they carry usage: it is the
sum of their children's, and counting it would double every trace's cost.

>>> u = usage({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 100,
...            "gen_ai.usage.cache_read.input_tokens": 40, "gen_ai.usage.output_tokens": 10})
>>> u.input_tokens, u.cached_input_tokens, u.output_tokens
(100, 40, 10)
>>> usage({"gen_ai.usage.input_tokens": 5, "gen_ai.usage.cache_read_input_tokens": 20}).input_tokens  # miss-only
25
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion")
CACHE_READ = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
              "gen_ai.usage.details.cache_read_tokens", "llm.token_count.prompt_details.cache_read")
CACHE_WRITE = ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens",
               "gen_ai.usage.details.cache_write_tokens", "llm.token_count.prompt_details.cache_write")
REASONING = ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens",
             "gen_ai.usage.details.reasoning_tokens", "llm.token_count.completion_details.reasoning")
MODEL = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")

#: gen_ai.operation.name values of one inference call, and their older spellings
INFERENCE_OPERATIONS = {"chat": "chat", "text_completion": "text_completion", "generate_content": "generate_content",
                        "embeddings": "embeddings", "completion": "text_completion", "embedding": "embeddings"}
#: OpenLLMetry's llm.request.type
_LLM_REQUEST_TYPES = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}
#: OpenInference's openinference.span.kind
_OPENINFERENCE_KINDS = {"LLM": "chat", "EMBEDDING": "embeddings"}


class SpanError(ValueError):
    """An inference span whose usage is unusable (e.g. a negative token count)."""


def operation(attrs: Mapping[str, Any]) -> str | None:
    """The inference operation (chat, text_completion, generate_content, embeddings), or
    None for any other span (agent, workflow, tool, chain, unknown).

    >>> operation({"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 900}) is None
    True
    >>> operation({"openinference.span.kind": "LLM"}), operation({"llm.request.type": "embedding"})
    ('chat', 'embeddings')
    """
    op = attrs.get("gen_ai.operation.name")
    if op is not None:
        return INFERENCE_OPERATIONS.get(str(op).lower())
    kind = attrs.get("llm.request.type")
    if kind is not None:
        return _LLM_REQUEST_TYPES.get(str(kind).lower())
    kind = attrs.get("openinference.span.kind")
    if kind is not None:
        return _OPENINFERENCE_KINDS.get(str(kind).upper())
    return None


def first(attrs: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None


def _count(value: Any, name: str) -> int:
    """A token count: an integer, an integral double, or a decimal string (some SDKs)."""
    if isinstance(value, bool):
        raise SpanError(f"{name} is not a token count: {value!r}")
    if isinstance(value, int):
        count = value
    elif isinstance(value, float) and value.is_integer():
        count = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        count = int(value)
    else:
        raise SpanError(f"{name} is not a token count: {str(value)[:40]!r}")
    if count < 0:
        raise SpanError(f"{name} is negative: {count}")
    return count


def _family(attrs: Mapping[str, Any], names: tuple[str, ...]) -> int | None:
    for name in names:
        value = attrs.get(name)
        if value is not None:
            return _count(value, name)
    return None


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int  # every prompt token, cache reads and writes included
    output_tokens: int  # every generated token, reasoning included
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


def usage(attrs: Mapping[str, Any], input_excludes_cache: bool = False,
          output_excludes_reasoning: bool = False) -> Usage | None:
    """The span's usage in tokenbrake's convention, or None when it reports none."""
    inp, out = _family(attrs, INPUT), _family(attrs, OUTPUT)
    if inp is None and out is None:
        return None
    inp, out = inp or 0, out or 0
    read, write = _family(attrs, CACHE_READ) or 0, _family(attrs, CACHE_WRITE) or 0
    reasoning = _family(attrs, REASONING) or 0
    if input_excludes_cache or read + write > inp:  # cache-miss-only input: add the cached parts back
        inp += read + write
    if output_excludes_reasoning or reasoning > out:
        out += reasoning
    return Usage(inp, out, read, write, reasoning)


def model_of(attrs: Mapping[str, Any]) -> str | None:
    found = first(attrs, MODEL)
    return None if found is None else str(found)


def provider_of(attrs: Mapping[str, Any]) -> str | None:
    """The provider as sent (``openai``, ``gcp.gemini``, ``aws.bedrock``...): the price
    catalog matches OpenTelemetry's names to its own (``gcp.gemini`` is ``google``)."""
    found = first(attrs, PROVIDER)
    return None if found is None else str(found).lower()


class ProducerMatch:
    """Producers named in a setting: instrumentation scope name prefixes, or ``provider:NAME``.

    >>> m = ProducerMatch("openlit, provider:anthropic")
    >>> m("openlit.instrumentation.openai", "openai"), m("x", "anthropic"), m("x", "openai")
    (True, True, False)
    """

    def __init__(self, spec: str) -> None:
        entries = [e.strip() for e in spec.split(",") if e.strip()]
        self.providers = {e.partition(":")[2].lower() for e in entries if e.startswith("provider:")}
        self.scopes = tuple(e for e in entries if not e.startswith("provider:"))

    def __call__(self, scope: str, provider: str | None) -> bool:
        return (bool(self.scopes) and scope.startswith(self.scopes)) or (provider or "") in self.providers
