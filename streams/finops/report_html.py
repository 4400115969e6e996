"""The report as one self-contained HTML file: inline CSS, inline SVG charts, one inline
script that checks the page itself (every chart has data, no script error), no network.

A Content-Security-Policy forbids every fetch (``default-src 'none'``), so a page that tried
to load anything would fail visibly instead of quietly depending on the network. The self-
check writes its verdict into ``#selfcheck`` (``data-ok``, ``data-empty``, ``data-errors``)
for a headless browser to read."""

from __future__ import annotations

from decimal import Decimal
from html import escape

from tokenbrake.streams.finops import svg
from tokenbrake.streams.finops.report_data import Report

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1500px;
color:#111827;background:#f9fafb;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:0 0 8px}.muted{fill:#6b7280;color:#6b7280}
.kpis{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}.kpi{background:#fff;border:1px solid #e5e7eb;
border-radius:8px;padding:10px 14px;min-width:150px}.kpi b{display:block;font-size:20px}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(680px,1fr));gap:16px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px 14px;margin:0 0 16px}
svg.chart{width:100%;height:auto;display:block}.ct{font-weight:600;font-size:13px;fill:#111827}
.ax{font-size:11px;fill:#4b5563}.lg{font-size:12px;font-weight:600}.grid{stroke:#e5e7eb}
.limit{stroke:#dc2626;stroke-dasharray:3 3}table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #f3f4f6}td.n,th.n{text-align:right}
"""

#: first in <head>: errors anywhere after it are counted
_ERROR_HOOK = """
window.__errors=[];window.addEventListener('error',function(e){window.__errors.push(String(e.message))});
var __ce=console.error;console.error=function(){window.__errors.push([].join.call(arguments,' '));
__ce.apply(console,arguments)};
"""

_SELF_CHECK = """
(function(){var charts=document.querySelectorAll('svg.chart');var empty=[];
charts.forEach(function(c){if(!(parseInt(c.getAttribute('data-points'),10)>0)||
c.querySelectorAll('polyline,rect,circle').length===0){empty.push(c.getAttribute('data-chart'))}});
var s=document.getElementById('selfcheck');s.setAttribute('data-charts',charts.length);
s.setAttribute('data-empty',empty.join(','));s.setAttribute('data-errors',window.__errors.length);
s.setAttribute('data-ok',String(empty.length===0&&window.__errors.length===0&&charts.length>0));
s.textContent=charts.length+' charts'+(empty.length?', without data: '+empty.join(', '):', all with data');})();
"""


def _table(headers: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    head = "".join(f'<th class="{"n" if i >= numeric_from else ""}">{escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"n" if i >= numeric_from else ""}">{escape(c)}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _budget_chart(i: int, b) -> str:  # noqa: ANN001 - a BurnDown
    u = b.use
    name = f"budget-{i}"
    scope = f"{u.tenant_id}{'/' + u.scope_value if u.scope_value else ''}"
    last_t, last_v = (b.cumulative[-1] if b.cumulative else (u.period_start, u.spent_usd))
    series = [("spent", b.cumulative),
              ("linear forecast", [(last_t, last_v), (u.period_end, u.linear_forecast_usd)]),
              ("weekday forecast", [(last_t, last_v), (u.period_end, u.weekday_forecast_usd)])]
    return svg.line_chart(name, f"{u.policy_id} ({u.period}) {scope}: {svg.usd(u.spent_usd)} of "
                          f"{svg.usd(u.limit_usd)}", series, (u.period_start, u.period_end),
                          [("limit", u.limit_usd)])


def render(report: Report) -> str:
    r = report
    sections: list[str] = []

    def section(title: str, body: str) -> None:
        sections.append(f"<section><h2>{escape(title)}</h2>{body}</section>")

    trend = svg.bar_chart("spend-by-day", "Spend by day", ["cost"], [(d, [c]) for d, c, _ in r.daily])
    cpr = svg.bar_chart("cost-per-request", "Cost per request by day", ["cost per request"],
                        [(d, [(c / n).quantize(Decimal("1e-9"))]) for d, c, n in r.daily if n])
    tops = {by: svg.hbar_chart(f"top-{by.replace(' ', '-')}", f"Top {by}s by cost", [(n, c) for n, c, _ in items])
            for by, items in r.top.items() if by in ("tenant", "feature", "model", "user")}
    lost = svg.bar_chart("money-lost", "Money lost: failed attempts and retries", ["failed attempts", "retries"],
                         [(d, [f, t]) for d, f, t in r.lost])
    saved = svg.bar_chart("cache-savings", "Cache savings", ["prompt cache", "semantic cache"],
                          [(d, [a, b]) for d, a, b in r.savings])
    budget_charts = [_budget_chart(i, b) for i, b in enumerate(r.budgets)]
    events = svg.timeline("controls-alerts", "Controls and alerts",
                          [(ts, kind, f"{what} on {scope}") for ts, kind, what, scope in r.timeline],
                          (r.start, r.end))

    section("Spend trend", f'<div class="grid2"><div>{trend}</div><div>{cpr}</div></div>')
    section("Top spenders", '<div class="grid2">' + "".join(f"<div>{c}</div>" for c in tops.values()) + "</div>")
    other = [[f"{by}: {name}", svg.usd(c), str(n)] for by in ("environment", "region", "prompt version", "tier")
             for name, c, n in r.top.get(by, [])]
    section("Spend by environment, region, prompt version, tier", _table(["", "cost", "requests"], other))
    budget_rows = [[u.policy_id, u.period, f"{u.tenant_id}{'/' + u.scope_value if u.scope_value else ''}",
                    svg.usd(u.limit_usd), svg.usd(u.spent_usd), f"{u.used:.1%}", svg.usd(u.remaining_usd),
                    svg.usd(u.linear_forecast_usd), svg.usd(u.weekday_forecast_usd)]
                   for u in (b.use for b in r.budgets)]
    note = ('<p class="muted">Not from the rollups (per-user or rolling budgets; see <code>tokenbrake status</code>): '
            f'{escape(", ".join(r.unsupported_budgets))}</p>' if r.unsupported_budgets else "")
    section("Budgets: burn-down and end-of-period forecast",
            '<div class="grid2">' + "".join(f"<div>{c}</div>" for c in budget_charts) + "</div>"
            + _table(["policy", "period", "scope", "limit", "spent", "used", "remaining", "linear forecast",
                      "weekday forecast"], budget_rows, 3) + note)
    if r.outcomes:
        per_outcome = svg.hbar_chart("cost-per-outcome", "Cost per outcome",
                                     [(f"{f} {k}", c) for f, k, _, _, c in r.outcomes[:8]])
        section("Cost per outcome", f'<div class="grid2"><div>{per_outcome}</div><div>'
                + _table(["feature", "kind", "outcomes", "cost", "cost per outcome"],
                         [[f, k, f"{n:,}", svg.usd(c), svg.usd(p)] for f, k, n, c, p in r.outcomes], 2)
                + "</div></div>")
    section("Money lost and saved", f'<div class="grid2"><div>{lost}</div><div>{saved}</div></div>')
    timeline_rows = [[f"{ts:%Y-%m-%d %H:%M}", kind, what, scope] for ts, kind, what, scope in r.timeline[-50:]]
    section("Controls and alerts", f'<div class="grid2"><div>{events}</div><div></div></div>'
            + _table(["time (UTC)", "kind", "what", "scope"], timeline_rows, 99))

    failed_total = sum((f for _, f, _ in r.lost), Decimal(0))
    retry_total = sum((t for _, _, t in r.lost), Decimal(0))  # a failed retry is in both
    saved_total = sum((a + b for _, a, b in r.savings), Decimal(0))
    kpis = [("spend", svg.usd(r.total_usd)), ("requests", f"{r.requests:,}"),
            ("cost per request", svg.usd(r.cost_per_request)), ("paid for failed attempts", svg.usd(failed_total)),
            ("paid for retries", svg.usd(retry_total)),
            ("cache savings", svg.usd(saved_total)),
            ("saved by downgrades", svg.usd(r.downgrade_savings_usd)), ("controls + alerts", str(len(r.timeline)))]
    scope = f" for tenant {escape(r.tenant)}" if r.tenant else ""
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">"
        f"<title>tokenbrake report {r.start:%Y-%m-%d} to {r.end:%Y-%m-%d}</title>"
        f"<script>{_ERROR_HOOK}</script><style>{_CSS}</style></head><body>"
        f"<h1>LLM spend{scope}</h1><p class=\"muted\">{r.start:%Y-%m-%d} to {r.end:%Y-%m-%d} (UTC, end excluded) "
        f"&middot; from the ClickHouse rollups &middot; <span id=\"selfcheck\">self-check did not run</span></p>"
        '<div class="kpis">' + "".join(f'<div class="kpi">{escape(k)}<b>{escape(v)}</b></div>' for k, v in kpis)
        + "</div>" + "".join(sections) + f"<script>{_SELF_CHECK}</script></body></html>")
