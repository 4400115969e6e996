"""Figures as a table and as JSON, and the lab (one embedded broker, a scratch directory)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.chaos.harness import ROOT
from tests.chaos.scenarios import Lab
from tokenbrake.streams.broker import EmbeddedBroker

COLUMNS = ("scenario", "seed", "result", "sent", "counted", "stored", "lost", "double", "settle_s", "seconds")
FIGURES_PATH = Path(os.environ.get("CHAOS_FIGURES", ROOT / ".tokenbrake" / "chaos-figures.json"))


def table(figures: list[dict[str, Any]]) -> str:
    rows = [COLUMNS]
    for f in figures:
        rows.append(tuple("pass" if c == "result" and f.get("ok") else "FAIL" if c == "result" else
                          "-" if f.get(c) is None else str(f.get(c)) for c in COLUMNS))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.rjust(w) if i > 2 else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    for f in figures:
        for check in f.get("checks", []):
            if not check["ok"]:
                lines.append(f"  {f['scenario']} (seed {f.get('seed')}): FAILED {check['name']}: "
                             f"{json.dumps(check['detail'], default=str)[:600]}")
    return "\n".join(lines)


def write_json(figures: list[dict[str, Any]], path: Path = FIGURES_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=1, default=str))
    return path


@contextmanager
def lab() -> Iterator[Lab]:
    """One embedded broker and a scratch directory for the workers' homes; the directory is
    kept when a scenario failed (CHAOS_KEEP=1 keeps it always) and its path printed."""
    root = Path(tempfile.mkdtemp(prefix="tokenbrake-chaos-"))
    broker = EmbeddedBroker(log_path=root / "broker.log")
    broker.start()
    the_lab = Lab(broker, root)
    try:
        yield the_lab
    finally:
        the_lab.close()
        broker.stop()
        if os.environ.get("CHAOS_KEEP") or not all(f.get("ok") for f in the_lab.figures):
            print(f"chaos: workers' homes and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
