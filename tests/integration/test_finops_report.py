"""``tokenbrake report`` as an operator runs it, and its HTML in headless Chromium (Debian's
``chromium``; ``make report-tool`` installs it): it loads with the network off, with no
script error, and every chart has data. The screenshot is kept in the test's tmp dir."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import finops_seed as seed
from tokenbrake.streams.price import PriceBook

ROOT = Path(__file__).resolve().parents[2]
POLICIES = """
budgets:
  - {id: acme-month, scope: {tenant: acme}, period: month, limit_usd: "2.00"}
  - {id: chat-month, scope: {tenant: "*", feature: chat}, period: month, limit_usd: "1.00"}
  - {id: per-user, scope: {tenant: acme, user: "*"}, period: day, limit_usd: "0.01"}
"""
CHARTS = {"spend-by-day", "cost-per-request", "top-tenant", "top-feature", "top-model", "top-user", "money-lost",
          "cache-savings", "controls-alerts", "budget-0", "budget-1", "budget-2", "cost-per-outcome"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):  # noqa: ANN201
    home = tmp_path_factory.mktemp("report")
    dsn = f"chdb://{home / 'chdb'}"
    priced = seed.price(seed.seed_events(), PriceBook())
    seed.write(dsn, priced)
    seed.write_audit(dsn)
    seed.write_outcomes(dsn)
    (home / "policies.yaml").write_text(POLICIES)
    env = {**os.environ, "TOKENBRAKE_CLICKHOUSE_DSN": dsn, "TOKENBRAKE_CLICKHOUSE_DATABASE": seed.DB,
           "TOKENBRAKE_HOME": str(home), "TOKENBRAKE_POLICIES_PATH": str(home / "policies.yaml"), "COLUMNS": "160"}
    html = home / "report.html"
    done = subprocess.run([sys.executable, "-m", "tokenbrake.streams", "report", "--since", "30d", "--until", "2026-03-30",
                           "--html", str(html), "--refresh"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return home, html, done.stdout, priced


def test_terminal_report_shows_each_answer(report):
    _, _, out, priced = report
    total = seed.total(priced, lambda p: p.event.ts < seed.START.replace(day=31))
    assert f"${total.quantize(seed.Decimal('0.01')):,}" in out
    for heading in ("Spend by day", "Top tenants", "Top features", "Top models", "Top users", "Budgets",
                    "Money lost and saved", "Controls and alerts", "Cost per outcome"):
        assert heading in out, heading
    assert "per-user" in out  # named as not answered from the rollups
    assert re.search(r"saved by downgrades\s+│\s+\$0\.\d*[1-9]", out), out[-3000:]
    times = re.findall(r"2026-03-\d\d \d\d:\d\d", out.split("Controls and alerts", 1)[1])
    assert len(times) == 12 and times == sorted(times)  # the timeline in time order


def _chromium(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "Debian's chromium is needed: make report-tool"
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--host-resolver-rules=MAP * ~NOTFOUND",
                           "--proxy-server=127.0.0.1:9", "--enable-logging=stderr", "--v=0", *args],
                          capture_output=True, text=True, timeout=120)


def test_html_loads_offline_without_errors_and_every_chart_has_data(report):
    home, html, _, _ = report
    text = html.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing to fetch
    done = _chromium("--virtual-time-budget=5000", "--dump-dom", html.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    check = re.search(r'<span id="selfcheck"([^>]*)>', done.stdout)
    assert check, done.stdout[:2000]
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', check.group(1)))
    assert attrs == {"charts": str(len(CHARTS)), "empty": "", "errors": "0", "ok": "true"}
    assert set(re.findall(r'data-chart="([^"]+)"', done.stdout)) == CHARTS
    assert not re.search(r"CONSOLE.*(Error|Refused)", done.stderr), done.stderr[-2000:]
    shot = home / "report.png"
    done = _chromium("--window-size=1500,3600", "--hide-scrollbars", f"--screenshot={shot}", html.as_uri())
    assert done.returncode == 0 and shot.stat().st_size > 20_000, done.stderr[-2000:]
