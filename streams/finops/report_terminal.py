"""The report in the terminal: rich tables of the same :class:`Report`."""

from __future__ import annotations

from decimal import Decimal

from rich.console import Console
from rich.table import Table

from tokenbrake.streams.finops.report_data import Report
from tokenbrake.streams.finops.svg import usd


def _table(title: str, headers: list[str], rows: list[list[str]]) -> Table:
    t = Table(title=title, title_justify="left")
    for i, h in enumerate(headers):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*r)
    return t


def print_report(report: Report, console: Console | None = None) -> None:
    r, out = report, console or Console()
    scope = f" for tenant {r.tenant}" if r.tenant else ""
    out.print(f"[bold]LLM spend{scope}[/] {r.start:%Y-%m-%d} to {r.end:%Y-%m-%d} (UTC, end excluded): "
              f"{usd(r.total_usd)} over {r.requests:,} requests, {usd(r.cost_per_request)} per request")
    out.print(_table("Spend by day", ["day", "cost", "requests", "cost/request"],
                     [[str(d), usd(c), f"{n:,}", usd(c / n) if n else "-"] for d, c, n in r.daily]))
    for by, items in r.top.items():
        if items:
            out.print(_table(f"Top {by}s", [by, "cost", "requests", "share"],
                             [[name, usd(c), f"{n:,}", f"{c / r.total_usd:.1%}" if r.total_usd else "-"]
                              for name, c, n in items]))
    if r.budgets:
        out.print(_table("Budgets", ["policy / scope", "limit", "spent", "used", "remaining", "linear forecast",
                                     "weekday forecast"],
                         [[f"{b.use.policy_id} ({b.use.period}) {b.use.tenant_id}"
                           f"{'/' + b.use.scope_value if b.use.scope_value else ''}", usd(b.use.limit_usd),
                           usd(b.use.spent_usd), f"{b.use.used:.1%}", usd(b.use.remaining_usd),
                           usd(b.use.linear_forecast_usd), usd(b.use.weekday_forecast_usd)] for b in r.budgets]))
    if r.unsupported_budgets:
        out.print(f"not from the rollups (see `tokenbrake status`): {', '.join(r.unsupported_budgets)}")
    if r.outcomes:
        out.print(_table("Cost per outcome", ["feature / kind", "outcomes", "cost", "cost per outcome"],
                         [[f"{f} {k}", f"{n:,}", usd(c), usd(p)] for f, k, n, c, p in r.outcomes]))
    lost = [sum((x[i] for x in r.lost), Decimal(0)) for i in (1, 2)]
    saved = [sum((x[i] for x in r.savings), Decimal(0)) for i in (1, 2)]
    out.print(_table("Money lost and saved", ["", "USD"],
                     [["failed attempts", usd(lost[0])], ["retries (attempt > 0)", usd(lost[1])],
                      ["prompt cache savings", usd(saved[0])], ["semantic cache savings", usd(saved[1])],
                      ["saved by downgrades", usd(r.downgrade_savings_usd)]]))
    if r.timeline:
        out.print(_table("Controls and alerts (latest 30)", ["time (UTC)", "kind", "what", "scope"],
                         [[f"{ts:%Y-%m-%d %H:%M}", kind, what, scope] for ts, kind, what, scope in r.timeline[-30:]]))
