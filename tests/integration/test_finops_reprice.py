"""``tokenbrake reprice`` on a range with known before/after totals: usage_events and every
rollup rewritten, events outside the range untouched, a second run changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from tests import finops_seed as seed
from tokenbrake.streams.finops import rollup_sql
from tokenbrake.streams.price import PriceBook
from tokenbrake.streams.price.overrides import Overrides
from tokenbrake.streams.sink.clickhouse import connect

ROOT = Path(__file__).resolve().parents[2]
# a negotiated discount on gpt-4o: half the list price ($2.50 / $10 per M at list)
PRICES = """
prices:
  - {provider: openai, model: gpt-4o, input_mtok: "1.25", output_mtok: "5.00", cache_read_mtok: "0.625"}
"""


def test_reprice_rewrites_the_range_and_every_rollup_idempotently(tmp_path):
    dsn = f"chdb://{tmp_path / 'chdb'}"
    priced = seed.price(seed.seed_events(), PriceBook())
    seed.write(dsn, priced)
    client = connect(dsn)  # the rollups as the refresh views keep them
    rollup_sql.refresh_range(client, seed.DB, seed.START, seed.START + timedelta(days=seed.DAYS))
    client.close()
    (tmp_path / "prices.yaml").write_text(PRICES)
    env = {**os.environ, "TOKENBRAKE_CLICKHOUSE_DSN": dsn, "TOKENBRAKE_CLICKHOUSE_DATABASE": seed.DB,
           "TOKENBRAKE_HOME": str(tmp_path)}
    env.pop("TOKENBRAKE_PRICE_OVERRIDES_PATH", None)

    def run() -> str:
        done = subprocess.run([sys.executable, "-m", "tokenbrake.streams", "reprice", "--from", "2026-03-02", "--to",
                               "2026-03-15", "--overrides", str(tmp_path / "prices.yaml")], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    in_range = [p for p in priced if p.event.ts.day <= 15]
    outside = [p for p in priced if p.event.ts.day > 15]
    repriced = seed.price([p.event for p in in_range],
                          PriceBook(Overrides.load(tmp_path / "prices.yaml")))
    old, new = seed.total(in_range), seed.total(repriced)
    assert new < old
    out = run()
    changed = sum(p.event.model == "gpt-4o" and not p.event.cache_hit for p in in_range)
    assert f"{len(in_range)} events, {changed} with a new cost" in out
    assert f"old total {old} USD" in out and f"new total {new} USD" in out
    assert f"old total {new} USD" in run()  # again: nothing changes
    assert "0 with a new cost" in run()

    client = connect(dsn)
    expected = new + seed.total(outside)
    for sql in ("SELECT sum(cost_usd) FROM tb.usage_events FINAL",
                "SELECT sum(cost_usd) FROM tb.usage_hourly FINAL",
                "SELECT sum(cost_usd) FROM tb.usage_daily FINAL",
                "SELECT sum(cost_usd) FROM tb.spend_user_day FINAL WHERE day <= '2026-03-15'",
                "SELECT sum(cost_usd) FROM tb.spend_minute FINAL WHERE dimension = 'tenant' "
                "AND window_start < '2026-03-16'"):
        total = client.query(sql).result_rows[0][0]
        assert total == (expected if "spend_" not in sql else new), sql
    assert client.query("SELECT count() FROM tb.usage_events FINAL").result_rows[0][0] == len(priced)
    client.close()


def test_reprice_mistakes_are_one_line(tmp_path):
    env = {**os.environ, "TOKENBRAKE_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'chdb'}", "TOKENBRAKE_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "tokenbrake.streams", "reprice", "--from", "2026-03-02", "--to", "2026-03-15",
                           "--overrides", str(tmp_path / "missing.yaml")], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == f"--overrides: no such file {tmp_path / 'missing.yaml'}"
