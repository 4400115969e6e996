"""The worker keeps the changed totals; the writer makes the rollup rows of them."""

from __future__ import annotations

from tokenbrake.streams.sink.rollups import keep_totals, rollup_rows
from tokenbrake.streams.state.store import DELETED

VEC = [1_500_000, 2, 300, 40, 5, 6, 1, 1]  # cost nanos, requests, input, output, cached, reasoning, errors, retries


def test_only_keys_with_a_rollup_row_are_kept_as_copies():
    changes = [(key, VEC, 0) for key in (
        "m29400000|t=acme", "m29400000|t=acme|f=chat", "m29400000|t=acme|m=gpt-4o",  # minutes: rows
        "m29400000|t=acme|u=u1",  # a user's minute (rolling user budgets): stays in the core
        "d20416|t=acme|u=u1",  # a user's day: a row
        "d20416|t=acme", "M670|t=acme|u=u1",  # days and months of other scopes: no row
    )] + [("m29400001|t=acme", DELETED, 0)]  # expired: its last total is already stored
    totals: dict = {}
    keep_totals(changes, 7, totals)
    assert sorted(totals) == ["d20416|t=acme|u=u1", "m29400000|t=acme", "m29400000|t=acme|f=chat",
                              "m29400000|t=acme|m=gpt-4o"]
    VEC[1] += 1  # the core adds in place after the chunk: what was kept does not move
    assert all(vec[1] == 2 and version == 7 for vec, version in totals.values())
    VEC[1] -= 1

    minutes, user_days = rollup_rows(totals)
    counters = [2, 300, 40, 5, 6, 1, 1, "0.001500000", 7]
    assert sorted(minutes) == sorted([["acme", "tenant", "", 29400000 * 60, *counters],
                                      ["acme", "feature", "chat", 29400000 * 60, *counters],
                                      ["acme", "model", "gpt-4o", 29400000 * 60, *counters]])
    assert user_days == [["acme", "u1", 20416, *counters]]
