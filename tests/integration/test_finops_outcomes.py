"""Cost per outcome on a seeded chdb with known totals: linked calls (by session and by
logical call id, across days), a call shared by two outcomes, unlinked spend shared over the
feature's outcomes of the day, margin where a value is given, unattributed spend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import pytest

from tests import finops_seed as seed
from tests.focus_rules import read_csv
from tokenbrake.schemas.outcome import OutcomeEvent
from tokenbrake.schemas.usage import UsageEvent
from tokenbrake.streams.finops.outcomes import cost_per_outcome, unattributed, write_outcomes
from tokenbrake.streams.price import PriceBook
from tokenbrake.streams.price.rates import nanos_to_usd
from tokenbrake.streams.sink.clickhouse import connect

ROOT = Path(__file__).resolve().parents[2]
DAY = datetime(2026, 3, 10, tzinfo=UTC)


def _event(event_id: str, ts: datetime, feature: str = "support", **kw) -> UsageEvent:  # noqa: ANN003
    return UsageEvent(event_id=event_id, ts=ts, tenant_id="acme", feature_id=feature, user_id="u1",
                      provider="openai", model="gpt-4o", input_tokens=1000 + len(event_id) * 37,
                      output_tokens=100 + len(event_id) * 11, **kw)


EVENTS = [
    _event("e1", DAY + timedelta(hours=9), session_id="s1"),
    _event("e2x", DAY + timedelta(hours=10), session_id="s1"),
    _event("e3xx", DAY + timedelta(hours=11), logical_call_id="L3"),
    _event("e4xxx", DAY + timedelta(hours=12)),  # linked to nothing: shared over the day's outcomes
    _event("e5xxxx", DAY + timedelta(hours=13), feature="search"),  # a feature with no outcome
    _event("e6xxxxx", DAY - timedelta(hours=3), session_id="s1"),  # the day before, same session
]
OUTCOMES = [
    OutcomeEvent(outcome_id="o1", ts=DAY + timedelta(hours=18), tenant_id="acme", feature_id="support",
                 kind="ticket_resolved", value="1.00", session_id="s1"),
    OutcomeEvent(outcome_id="o2", ts=DAY + timedelta(hours=18), tenant_id="acme", feature_id="support",
                 kind="ticket_resolved", logical_call_ids=["L3"]),
    OutcomeEvent(outcome_id="o3", ts=DAY + timedelta(hours=19), tenant_id="acme", feature_id="support",
                 kind="ticket_escalated", logical_call_ids=["L3"]),
    OutcomeEvent(outcome_id="o4", ts=DAY + timedelta(hours=20), tenant_id="acme", feature_id="support",
                 kind="ticket_resolved", session_id="s9"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):  # noqa: ANN201
    home = tmp_path_factory.mktemp("outcomes")
    dsn = f"chdb://{home / 'chdb'}"
    priced = seed.price(EVENTS, PriceBook())
    seed.write(dsn, priced)
    cost = {p.event.event_id: nanos_to_usd(p.cost_nanos) for p in priced}
    return home, dsn, cost


def test_cost_per_outcome_follows_the_attribution_rule(store):
    _, dsn, c = store
    client = connect(dsn)
    write_outcomes(client, seed.DB, OUTCOMES)
    write_outcomes(client, seed.DB, OUTCOMES)  # written again: counted once
    rows = cost_per_outcome(client, seed.DB, DAY, DAY + timedelta(days=1))
    share = c["e4xxx"] / 4  # four outcomes that day for acme/support
    o1 = c["e1"] + c["e2x"] + c["e6xxxxx"] + share
    o2 = o3 = c["e3xx"] / 2 + share
    o4 = share
    resolved = o1 + o2 + o4
    by_kind = {r["kind"]: r for r in rows}
    assert set(by_kind) == {"ticket_resolved", "ticket_escalated"}
    r = by_kind["ticket_resolved"]
    per_outcome = (resolved / 3).quantize(Decimal("1e-18"), rounding=ROUND_DOWN)  # a ratio: 18 decimals
    assert (r["outcomes"], r["cost_usd"], r["cost_per_outcome_usd"]) == (3, resolved, per_outcome)
    assert (r["valued_outcomes"], r["value_usd"], r["margin_usd"]) == (1, Decimal("1.00"), Decimal("1.00") - o1)
    e = by_kind["ticket_escalated"]
    assert (e["outcomes"], e["cost_usd"], e["cost_per_outcome_usd"]) == (1, o3, o3)
    assert e["outcomes_per_usd"] == (1 / o3).quantize(Decimal("1e-18"), rounding=ROUND_DOWN)  # 18 decimals
    # every dollar of acme/support in the window went to an outcome (e6 is the day before)
    assert resolved + o3 == sum(c[k] for k in ("e1", "e2x", "e3xx", "e4xxx", "e6xxxxx"))
    assert unattributed(client, seed.DB, DAY, DAY + timedelta(days=1)) == \
        [(DAY.date(), "acme", "search", c["e5xxxx"])]
    client.close()


def test_outcomes_load_and_export_from_the_command_line(store):
    home, dsn, c = store
    lines = [OutcomeEvent.model_validate(o.model_dump()).model_dump_json() for o in OUTCOMES]
    lines.append(json.dumps({"outcome_id": "bad", "ts": "2026-03-10T10:00:00Z", "tenant_id": "acme",
                             "feature_id": "support", "kind": "ticket_resolved", "value": 0.5}))
    (home / "outcomes.jsonl").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "TOKENBRAKE_CLICKHOUSE_DSN": dsn, "TOKENBRAKE_CLICKHOUSE_DATABASE": seed.DB,
           "TOKENBRAKE_HOME": str(home)}

    def tokenbrake(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tokenbrake.streams", *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=300)

    done = tokenbrake("outcomes", "load", str(home / "outcomes.jsonl"))
    assert done.returncode == 0 and "4 outcomes stored (1 invalid lines skipped)" in done.stdout, done.stderr
    assert done.stderr.startswith(f"{home / 'outcomes.jsonl'}:5: skipped: value:")
    done = tokenbrake("export", "csv", "--query", "outcomes", "--from", "2026-03-10", "--to", "2026-03-10",
                      "--output", str(home / "outcomes.csv"))
    assert done.returncode == 0, done.stderr
    header, rows = read_csv(home / "outcomes.csv")
    assert header[:5] == ["day", "tenant_id", "feature_id", "kind", "outcomes"]
    assert sum(Decimal(r["cost_usd"]) for r in rows) == sum(c[k] for k in ("e1", "e2x", "e3xx", "e4xxx", "e6xxxxx"))
