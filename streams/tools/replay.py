"""Replay traces as usage events: JSONL of UsageEvents, or the public Azure and BurstGPT
traces turned into several tenants, features, users and models (seeded, reproducible).

Timestamps are mapped onto the present, sped up: the trace's first request happens "now"
and an offset of ``t`` seconds becomes ``t / speed`` seconds later, so budgets, day
buckets and the kill switch behave as they would live.
"""

from __future__ import annotations

import csv
import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tokenbrake.schemas.codec import loads

#: tenant -> (traffic share, tier); feature -> (model, provider, share of a tenant's calls)
TENANTS = {"acme": (0.40, "enterprise"), "globex": (0.30, "pro"), "initech": (0.20, "pro"),
           "umbrella": (0.10, "free")}
FEATURES = {"chat": ("gpt-4o", "openai", 0.6), "summarize": ("gpt-4o-mini", "openai", 0.25),
            "search": ("claude-3-5-haiku", "anthropic", 0.15)}

#: the public Azure trace in the project's shared data folder (beside the checkout)
AZURE_TRACE = Path(__file__).resolve().parents[3] / "shared" / "data" / "AzureLLMInferenceTrace_conv.csv"


def azure_trace_path() -> Path:
    """The Azure trace the demo, ``scenarios`` and ``evaluate`` read: ``TOKENBRAKE_DEMO_TRACE``, else the
    shared data folder beside the checkout or beside the working directory; exits with one line if none is."""
    for candidate in (Path(os.environ.get("TOKENBRAKE_DEMO_TRACE", "")), AZURE_TRACE,
                      Path.cwd().parent / "shared" / "data" / "AzureLLMInferenceTrace_conv.csv"):
        if candidate.is_file():
            return candidate
    raise SystemExit("demo trace not found: set TOKENBRAKE_DEMO_TRACE to AzureLLMInferenceTrace_conv.csv")


@dataclass(frozen=True, slots=True)
class TraceRow:
    offset_s: float  # seconds since the trace's first request
    input_tokens: int
    output_tokens: int
    model_hint: str | None = None
    failed: bool = False


def read_azure(path: Path) -> Iterator[TraceRow]:
    """AzureLLMInferenceTrace_*.csv: TIMESTAMP (100 ns precision), ContextTokens, GeneratedTokens."""
    start = None
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            ts = datetime.fromisoformat(row["TIMESTAMP"].strip()[:26])
            start = start or ts
            yield TraceRow((ts - start).total_seconds(), int(row["ContextTokens"]), int(row["GeneratedTokens"]))


def read_burstgpt(path: Path) -> Iterator[TraceRow]:
    """BurstGPT: Timestamp (s), Model (ChatGPT|GPT-4), Request tokens, Response tokens; failed = 0 response."""
    start = None
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            offset_s = float(row["Timestamp"])
            start = offset_s if start is None else start
            out = int(row["Response tokens"])
            hint = "gpt-4" if row["Model"].strip().upper() == "GPT-4" else "gpt-3.5-turbo"
            yield TraceRow(offset_s - start, int(row["Request tokens"]), out, hint, failed=out == 0)


def synthesize(rows: Iterator[TraceRow], start_ms: int, speed: float, seed: int = 7,
               users_per_tenant: int = 200) -> Iterator[dict[str, Any]]:
    """Attribute each trace row to a tenant, feature, user and model; stamp it in the present."""
    rng = random.Random(seed)
    user_ids = [f"u{i:04d}" for i in range(users_per_tenant)]
    user_weights = [1 / (i + 1) ** 0.8 for i in range(users_per_tenant)]  # Zipf-shaped, as real usage is
    tenants, tshares = list(TENANTS), [s for s, _ in TENANTS.values()]
    features, fshares = list(FEATURES), [f[2] for f in FEATURES.values()]
    for row_index, row in enumerate(rows):
        tenant = rng.choices(tenants, tshares)[0]
        feature = rng.choices(features, fshares)[0]
        model, provider, _ = FEATURES[feature]
        if row.model_hint:
            model, provider = row.model_hint, "openai"
        user = rng.choices(user_ids, user_weights)[0]
        call = uuid.UUID(int=rng.getrandbits(128)).hex
        ts = start_ms + int(row.offset_s * 1000 / speed)
        failed = row.failed or rng.random() < 0.01
        cached = rng.randrange(0, row.input_tokens + 1) if feature == "chat" and rng.random() < 0.3 else 0
        yield {"event_id": f"{call}-0", "ts": ts, "tenant_id": tenant, "feature_id": feature, "user_id": user,
               "provider": provider, "model": model, "environment": "prod", "tenant_tier": TENANTS[tenant][1],
               "prompt_version": "v1", "input_tokens": row.input_tokens,
               "output_tokens": 0 if failed else row.output_tokens, "cached_input_tokens": cached,
               "logical_call_id": call, "attempt": 0, "status": "error" if failed else "ok",
               "latency_ms": 200 + row.output_tokens * 20, "_seq": row_index}
        if failed:  # the client retries once, successfully
            yield {**_retry(call, ts + 500, tenant, feature, user, provider, model, row), "_seq": row_index}


def _retry(call: str, ts: int, tenant: str, feature: str, user: str, provider: str, model: str,
           row: TraceRow) -> dict[str, Any]:
    return {"event_id": f"{call}-1", "ts": ts, "tenant_id": tenant, "feature_id": feature, "user_id": user,
            "provider": provider, "model": model, "environment": "prod", "tenant_tier": TENANTS[tenant][1],
            "prompt_version": "v1", "input_tokens": row.input_tokens, "output_tokens": row.output_tokens,
            "logical_call_id": call, "attempt": 1, "status": "ok", "latency_ms": 200 + row.output_tokens * 20}


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield loads(line)
                except ValueError:
                    raise TraceFormatError(f"line {lineno} is not JSON") from None


#: the columns each CSV trace format reads
COLUMNS = {"azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
           "burstgpt": ("Timestamp", "Model", "Request tokens", "Response tokens")}


class TraceFormatError(ValueError):
    """The file is not in the format given (one line: what was found, and the flag that fits)."""


def check_format(path: Path, fmt: str) -> None:
    """Read the first line and fail with a one-line error when it does not fit ``fmt``
    (rather than a ``KeyError`` or ``JSONDecodeError`` mid-replay)."""
    try:
        with open(path, newline="") as fh:
            first = next((line for line in fh if line.strip()), "")
    except OSError as exc:
        raise TraceFormatError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TraceFormatError(f"{path} is not a text file") from None
    if not first:
        raise TraceFormatError(f"{path} is empty")
    header = [c.strip() for c in next(csv.reader([first]))]
    fits = [name for name, cols in COLUMNS.items() if all(c in header for c in cols)]
    if fmt == "jsonl":
        try:
            loads(first.encode())
        except ValueError:
            hint = f"; it looks like a CSV trace: add --format {fits[0]}" if fits else ""
            raise TraceFormatError(f"{path}: line 1 is not JSON (--format jsonl){hint}") from None
        return
    if fmt not in fits:
        missing = [c for c in COLUMNS[fmt] if c not in header]
        hint = (f"; it looks like --format {fits[0]}" if fits else
                "; a JSONL file of events needs --format jsonl" if first.lstrip().startswith(("{", "[")) else "")
        raise TraceFormatError(f"{path}: not --format {fmt} (no column {', '.join(missing)}){hint}")


def trace_events(path: Path, fmt: str, speed: float, start_ms: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    if fmt == "jsonl":
        return read_jsonl(path)
    reader = {"azure": read_azure, "burstgpt": read_burstgpt}[fmt]
    return synthesize(reader(path), start_ms, speed, seed)
