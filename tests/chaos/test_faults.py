"""The fault suite (issue 11, "The fault suite (in CI)"): each test runs one scenario of
``tests.chaos.scenarios`` against real processes and fails with the scenario's figures and
failed checks. See the README's Reliability section."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chaos import scenarios, scenarios_input
from tests.chaos.conftest import RUNS, SEED
from tests.chaos.report import table
from tests.chaos.scenarios import Lab


def _run(lab: Lab, scenario: Callable, seed: int, **kwargs: object) -> None:
    fig = scenario(lab, seed, **kwargs)
    lab.figures.append(fig)
    assert fig["ok"], f"seed {seed}\n{table([fig])}"


def test_hostile_messages_are_dead_lettered_and_valid_ones_counted_once(chaos_lab):
    _run(chaos_lab, scenarios_input.hostile, SEED)


def test_replaying_the_whole_input_twice_changes_nothing(chaos_lab):
    _run(chaos_lab, scenarios.replay, SEED)


def test_clickhouse_away_for_60s_enforcement_goes_on_and_every_row_lands_once(chaos_lab):
    _run(chaos_lab, scenarios.outage, SEED)


def test_three_workers_join_die_and_leave_and_totals_stay_exact(chaos_lab):
    _run(chaos_lab, scenarios.rebalance, SEED)


@pytest.mark.parametrize("run", range(RUNS))
def test_kill9_three_times_under_load_and_totals_stay_exact(chaos_lab, run):
    _run(chaos_lab, scenarios.kill9, SEED + run)


def test_no_raw_user_id_in_any_log_topic_or_table(chaos_lab):
    """Last: scans what every scenario before it left (and a reporter's own events)."""
    _run(chaos_lab, scenarios_input.privacy, SEED)
