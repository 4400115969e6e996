"""Every persisted value is a named record with a version (``streams.state.records``), and a
worker restores the records the previous release wrote: the changelog written before an
upgrade is what the upgraded worker recovers from."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import NOW_MS, engine, event
from tests.unit.test_operator_overrides import _by_hand
from tokenbrake.streams.aggregate.periods import DAY_MS
from tokenbrake.streams.state import keys
from tokenbrake.streams.state.records import (
    MARK,
    Baseline,
    BudgetLevel,
    CapAlert,
    OperatorControl,
    SpendTotals,
    UnpricedModel,
)

POLICIES = """
budgets:
  - id: daily
    scope: {tenant: acme}
    period: day
    limit_usd: "0.01"
    warn_at: []
    on_exceed: [{at: 1.0, action: block}]
request_cost_caps:
  - {id: cap, max_usd: "0.50"}
"""


def _previous(name: str, key: str, record: Any) -> Any:
    """A record as the previous release wrote it (what its changelog holds)."""
    if record is None:
        return None
    if name == "aggregates":  # [8 counters, position]
        return [*record["counters"], record["pos"]]
    if key.startswith(keys.BUDGET):
        return [record["period"], record["level"], record["fingerprint"], record["scope"], record["wish"]]
    if key.startswith(keys.CAP):
        return {k: v for k, v in record.items() if k != "v"}
    if key.startswith(keys.UNPRICED):
        return record["first_seen_ms"]
    if key.startswith(keys.OPERATOR):
        return record["control"]
    if key.startswith(keys.BASELINE):
        return [record["model"], record["incident"], record["params"], record["saved_ms"]]
    return record


def _state() -> tuple[Any, dict[str, list[tuple[str, Any, int]]]]:
    """An engine with a budget block, a cap alert, an unpriced model and an operator's control
    on another tenant, and what its worker wrote to the changelogs (the drained changes)."""
    e = engine(POLICIES)
    for i in range(4):
        e.process(event(ts=NOW_MS + i), 0, i)
    e.process(event(ts=NOW_MS + 10, input_tokens=200_000, output_tokens=10_000), 0, 10)  # $0.60: the cap
    e.process(event(ts=NOW_MS + 11, model="mystery-model"), 0, 11)
    e.operator_control(_by_hand("throttle", max_rps=5))
    drained = e.drain()
    assert {a.rule for a in drained.alerts} >= {"budget", "request_cost_cap", "unpriced_model"}
    return e, {name: [(k, e.encoder(name)(v), p) for k, v, p in records] for name, records in drained.changes.items()}


def test_every_record_this_release_writes_names_its_version():
    _, changes = _state()
    kinds = set()
    for name, records in changes.items():
        for key, record, _ in records:
            assert isinstance(record, dict) and isinstance(record.get("v"), int), (name, key, record)
            kinds.add("bucket" if name == "aggregates" else key.split("|")[0])
    assert {"bucket", "b", "c", "u", "op"} <= kinds, kinds


def test_a_worker_restores_what_the_previous_release_wrote():
    """Restored from the previous release's records, the engine holds the same state and goes on
    deciding exactly as one restored from this release's records: no re-fire of the budget, the
    cap or the unpriced model, the operator's control in force, the cap resolved at midnight."""
    _, changes = _state()
    now = engine(POLICIES)
    now.restore(changes)
    before = engine(POLICIES)
    before.restore({name: [(k, _previous(name, k, r), p) for k, r, p in records] for name, records in changes.items()})
    assert before.stores["aggregates"].data == now.stores["aggregates"].data
    assert before.status()["controls"] == now.status()["controls"] != []

    def go_on(e):
        for i in range(3):  # new messages: the same scopes, the same cap, the same unknown model
            e.process(event(ts=NOW_MS + 100 + i, input_tokens=200_000, output_tokens=10_000), 0, 100 + i)
            e.process(event(ts=NOW_MS + 200 + i, model="mystery-model"), 0, 200 + i)
        first = e.drain()
        e.watermark = NOW_MS + DAY_MS
        e.tick()
        later = e.drain()
        return ([(c.action, c.scope.key()) for c in first.controls + later.controls],
                [(a.rule, a.state) for a in first.alerts + later.alerts])

    controls, alerts = go_on(before)
    assert (controls, alerts) == go_on(now)
    assert ("request_cost_cap", "resolved") in alerts and ("request_cost_cap", "firing") not in alerts
    assert ("unpriced_model", "firing") not in alerts
    caps = [v for k, v in before.stores["decisions"].items() if k.startswith(keys.CAP)]
    assert caps and all(v["v"] == CapAlert.VERSION for v in caps)  # rewritten in this release's form


counters = st.lists(st.integers(0, 10**15), min_size=8, max_size=8)


@given(counters, st.integers(-1, 2**40))
def test_spend_totals_round_trip_and_read_the_previous_form(values, pos):
    totals = [*values, pos]
    record = SpendTotals.dump(totals)
    assert record["v"] == SpendTotals.VERSION and SpendTotals.read(record) == totals
    assert SpendTotals.read(list(totals)) == totals and SpendTotals.read(list(values)) == [*values, -1]
    totals[0] += 1  # the in-memory list is added to in place: the record is a copy
    assert record["counters"][0] == values[0]


def test_records_of_an_unknown_version_are_refused_loudly():
    for read, record in ((SpendTotals.read, {"v": 9, "counters": [], "pos": 0}), (CapAlert.read, {"v": 9}),
                         (UnpricedModel.read, {"v": 9}), (Baseline.read, {"v": 9}),
                         (OperatorControl.read, {"v": 9, "control": {}}), (BudgetLevel.read, {"v": 9})):
        try:
            read(record)
        except ValueError as exc:
            assert "unknown version" in str(exc)
        else:
            raise AssertionError(f"{read.__qualname__} accepted {record}")


def test_older_cap_and_mark_records_read():
    assert CapAlert.read(20_500) == CapAlert(20_500, None, True)  # a bare day: nothing left to resolve
    assert MARK == {"v": 1}


def test_the_worker_table_recovered_from_a_previous_changelog_is_read_on_attach():
    """The worker's stores share Faust's table dicts, filled by changelog recovery with records
    as they were written; attaching turns each into the in-memory value, whatever its version."""
    from tokenbrake.streams.state.store import Store

    table = {"d20500|t=acme": [7, 1, 0, 0, 0, 0, 0, 0], "d20501|t=acme": [7, 1, 0, 0, 0, 0, 0, 0, 5],
             "M674|t=acme": {"v": 2, "counters": [14, 2, 0, 0, 0, 0, 0, 0], "pos": 6}}
    store = Store("aggregates", SpendTotals)
    store.attach(table, {})
    assert store.data is table and table == {"d20500|t=acme": [7, 1, 0, 0, 0, 0, 0, 0, -1],
                                             "d20501|t=acme": [7, 1, 0, 0, 0, 0, 0, 0, 5],
                                             "M674|t=acme": [14, 2, 0, 0, 0, 0, 0, 0, 6]}
    store.set("M674|t=acme", [15, 3, 0, 0, 0, 0, 0, 0, 7])
    [(key, value, _)] = store.changes()
    assert store.encode(value) == {"v": 2, "counters": [15, 3, 0, 0, 0, 0, 0, 0], "pos": 7}
