"""The fault suite's session: one embedded broker, the figures of every scenario printed as a
table at the end and written as JSON (``CHAOS_FIGURES``, default .tokenbrake/chaos-figures.json).

Not part of ``make test`` (pyproject's testpaths leave tests/chaos out): ``make chaos`` runs it.
``CHAOS_SEED`` fixes the first seed (default random, printed); ``CHAOS_RUNS`` repeats the
kill -9 scenario (``make chaos-long``: 5)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

from tests.chaos.report import FIGURES_PATH, lab, table, write_json
from tests.chaos.scenarios import Lab

SEED = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 1_000_000))
RUNS = int(os.environ.get("CHAOS_RUNS") or 1)
_FIGURES: list[dict] = []


@pytest.fixture(scope="session")
def chaos_lab() -> Iterator[Lab]:
    with lab() as the_lab:
        the_lab.figures = _FIGURES
        yield the_lab


def pytest_report_header(config: pytest.Config) -> str:
    return f"chaos: first seed {SEED} (CHAOS_SEED={SEED} repeats this run), kill -9 runs {RUNS}"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    if not _FIGURES:
        return
    terminalreporter.section("chaos figures")
    terminalreporter.write_line(table(_FIGURES))
    terminalreporter.write_line(f"JSON: {write_json(_FIGURES, FIGURES_PATH)}")
