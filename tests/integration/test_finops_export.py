"""``tokenbrake export`` as an operator runs it (a process reading the configured chdb, the
worker stopped): the FOCUS file passes the column rules and its ListCost adds up exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests import finops_seed as seed
from tests.focus_rules import problems, read_csv
from tokenbrake.streams.price import PriceBook

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory):  # noqa: ANN201
    home = tmp_path_factory.mktemp("export")
    dsn = f"chdb://{home / 'chdb'}"
    priced = seed.price(seed.seed_events(), PriceBook())
    seed.write(dsn, priced)  # the writer closes chdb: the export process may open it
    env = {**os.environ, "TOKENBRAKE_CLICKHOUSE_DSN": dsn, "TOKENBRAKE_CLICKHOUSE_DATABASE": seed.DB,
           "TOKENBRAKE_HOME": str(home)}
    return env, priced, home


def tokenbrake(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokenbrake.streams", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def _exact_list_cost(priced) -> Decimal:  # noqa: ANN001
    book, total = PriceBook(), Decimal(0)
    for p in priced:
        e = p.event
        if e.cache_hit:
            continue
        r = book.rates(e.provider, e.model, p.ts_ms).base
        femto = r.cost_femto(e.input_tokens, e.output_tokens, e.cached_input_tokens, e.cache_write_tokens)
        total += Decimal(femto).scaleb(-15)
    return total


@pytest.mark.parametrize("granularity", ["day", "hour"])
def test_focus_csv_passes_the_column_rules_and_adds_up(store, granularity):
    env, priced, home = store
    out = home / f"focus-{granularity}.csv"
    done = tokenbrake(env, "export", "focus", "--from", "2026-03-02", "--to", "2026-03-31", "--granularity",
                      granularity, "--output", str(out), "--refresh")
    assert done.returncode == 0, done.stderr
    header, rows = read_csv(out)
    assert problems(rows, header) == []
    assert sum(Decimal(r["ListCost"]) for r in rows) == _exact_list_cost(priced)
    # stored costs are rounded per call to nano-dollars: within half a nano-dollar per call
    assert abs(sum(Decimal(r["BilledCost"]) for r in rows) - seed.total(priced)) <= Decimal("0.5e-9") * len(priced)
    assert {r["x_TokenType"] for r in rows} == {"input", "cached input", "cache write", "output"}
    assert {r["SubAccountId"] for r in rows} == {"acme", "globex"}
    keys = Counter((r["ChargePeriodStart"], r["SubAccountId"], r["x_FeatureId"], r["x_Model"], r["x_Environment"],
                    r["x_PromptVersion"], r["x_TokenType"]) for r in rows)
    assert max(keys.values()) == 1  # one row per period x tenant x feature x model x tags x token type
    assert all(r["ServiceSubcategory"] == "Generative AI" and r["ChargeCategory"] == "Usage" for r in rows)


def test_focus_parquet_has_the_same_rows_with_decimal_money(store):
    env, priced, home = store
    out = home / "focus.parquet"
    done = tokenbrake(env, "export", "focus", "--from", "2026-03-02", "--to", "2026-03-31", "--output", str(out))
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert str(table.schema.field("ListCost").type) == "decimal128(38, 18)"
    assert sum(table.column("ListCost").to_pylist()) == _exact_list_cost(priced)


def test_csv_exports_and_one_line_errors(store):
    env, priced, home = store
    out = home / "spend.csv"
    done = tokenbrake(env, "export", "csv", "--query", "spend", "--from", "2026-03-01", "--to", "2026-03-31",
                      "--output", str(out), "--tenant", "acme")
    assert done.returncode == 0, done.stderr
    header, rows = read_csv(out)
    assert sum(Decimal(r["cost_usd"]) for r in rows) == seed.total(priced, lambda p: p.event.tenant_id == "acme")
    for query in ("users", "controls", "alerts"):
        done = tokenbrake(env, "export", "csv", "--query", query, "--from", "2026-03-01", "--to", "2026-03-31",
                          "--output", str(home / f"{query}.csv"))
        assert done.returncode == 0, done.stderr
    users_header, users = read_csv(home / "users.csv")
    assert sum(Decimal(r["cost_usd"]) for r in users) == seed.total(priced) and "user_id" in users_header
    done = tokenbrake(env, "export", "csv", "--query", "controls", "--from", "2025-01-01", "--to", "2025-01-02",
                      "--output", str(home / "none.csv"))
    assert done.returncode == 0 and done.stdout.startswith("0 rows")
    assert read_csv(home / "none.csv") == (header_of_controls := read_csv(home / "controls.csv")[0], []) and \
        "control_id" in header_of_controls
    bad = tokenbrake(env, "export", "focus", "--from", "2026-03-32", "--to", "2026-03-31", "--output", "x.csv")
    assert bad.returncode == 2 and bad.stderr.strip() == "not a date (YYYY-MM-DD): '2026-03-32'"


def test_a_chdb_directory_held_by_another_process_is_one_line(tmp_path):
    dsn = f"chdb://{tmp_path / 'chdb'}"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, clickhouse_connect\n"
                               f"c = clickhouse_connect.get_client(dsn={dsn!r}); c.command('SELECT 1')\n"
                               "print('open', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"  # the worker stand-in holds the directory
        env = {**os.environ, "TOKENBRAKE_CLICKHOUSE_DSN": dsn, "TOKENBRAKE_HOME": str(tmp_path)}
        done = tokenbrake(env, "export", "csv", "--query", "spend", "--from", "2026-03-01", "--to", "2026-03-01",
                          "--output", str(tmp_path / "x.csv"))
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"cannot open {dsn}: is the worker running?")
