"""Human-readable tables for ``tokenbrake status`` and ``tokenbrake control list``.

Readable at 80 columns: rows are grouped by scope kind (tenant, feature, user, model), so a
scope is written as its values (``acme / chat``) under a title that says what they are, long
values fold onto the next line instead of being cut, and whatever is left out is said.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

from rich.console import Console
from rich.table import Table

from tokenbrake.schemas.common import dollars
from tokenbrake.streams.state.keys import parse_scope

KINDS = ("tenant", "feature", "user", "model")
TITLES = {"tenant": "tenants", "feature": "tenant / feature", "user": "tenant / user", "model": "tenant / model"}


def spend_scope(key: str) -> tuple[str, str]:
    """``t=acme|f=chat`` -> (``feature``, ``acme / chat``)."""
    tenant, kind, value = parse_scope(key)
    return kind, f"{tenant} / {value}" if value else tenant


def control_scope(key: str) -> tuple[str, str]:
    """``tenant=acme/feature=chat/user=*/model=*`` -> (``feature``, ``acme / chat``); several set
    parts read ``acme / chat / user u1``."""
    parts = {}
    for part in key.split("/"):
        name, _, value = part.partition("=")
        if value != "*":
            parts[name] = unquote(value)
    named = [k for k in ("feature", "user", "model") if k in parts]
    kind = named[0] if len(named) == 1 else ("tenant" if not named else "+".join(named))
    values = [parts.get("tenant", "*"), *(parts[k] if len(named) == 1 else f"{k} {parts[k]}" for k in named)]
    return kind, " / ".join(values)


def _title(kind: str) -> str:
    return TITLES.get(kind, "tenant / " + kind.replace("+", " / "))


def _grouped(rows: Iterable[tuple[str, str, Any]]) -> dict[str, list[tuple[str, Any]]]:
    """(kind, label, row) -> kind -> [(label, row)], tenants first."""
    groups: dict[str, list[tuple[str, Any]]] = {}
    for kind, label, row in rows:
        groups.setdefault(kind, []).append((label, row))
    order = {k: i for i, k in enumerate(KINDS)}
    return dict(sorted(groups.items(), key=lambda kv: order.get(kv[0], len(order))))


def spend_tables(status: dict[str, Any]) -> list[Table]:
    tables = []
    for kind, rows in _grouped((*spend_scope(r["scope"]), r) for r in status.get("spend", [])).items():
        table = Table(title=f"spend: {_title(kind)}", title_justify="left")
        table.add_column(_title(kind), overflow="fold")
        for col in ("today $", "month $", "calls", "errors", "retries"):
            table.add_column(col, justify="right", no_wrap=True)
        for label, row in rows:
            table.add_row(label, usd(row["today_usd"]), usd(row["month_usd"]), str(row["today_requests"]),
                          str(row["today_errors"]), str(row["today_retries"]))
        tables.append(table)
    return tables


def usd(exact: str | None) -> str:
    """Dollars for people (``--json`` has the exact value); '-' for a total not kept."""
    return "-" if exact is None else dollars(Decimal(exact)).replace("$", "", 1)


def _detail(c: dict[str, Any]) -> str:
    if c.get("action") == "allow":
        return "overrides every rule"
    if c.get("downgrade_to"):
        return f"to {c['downgrade_to']}"
    return f"{c['max_rps']} rps" if c.get("max_rps") else ""


def controls_tables(controls: list[dict[str, Any]], *, full: bool = False) -> list[Table]:
    """``full``: with reason, expiry and issuer (``control list``); else scope and action (``status``)."""
    tables = []
    for kind, rows in _grouped((*control_scope(c["scope"]), c) for c in controls).items():
        table = Table(title=f"controls: {_title(kind)}", title_justify="left")
        table.add_column(_title(kind), overflow="fold")
        table.add_column("action", no_wrap=True)
        table.add_column("detail", overflow="fold")
        if full:
            table.add_column("expires (UTC)", overflow="fold")
            table.add_column("by / reason", overflow="fold")
        for label, cell in rows:
            cells = [label, cell["action"], _detail(cell)]
            if full:
                by, rule = cell.get("issued_by", ""), cell.get("rule", "")
                cells += [_when(cell.get("expires_at")),
                          f"{by}{f' ({rule})' if rule and rule != by else ''}: {cell.get('reason', '')}"]
            table.add_row(*cells)
        tables.append(table)
    return tables


def _when(value: Any) -> str:
    if not value:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)[:16].replace("T", " ")


def render_status(status: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    shown, total = len(status.get("spend", [])), status.get("spend_scopes")
    for table in spend_tables(status):
        console.print(table)
    if not shown:
        console.print("no spend today yet")
    if total is not None and total > shown:
        console.print(f"[yellow]{shown} of {total} scopes shown[/] (the most spent today; "
                      f"`tokenbrake status --limit {total}` shows all)")
    if status.get("user_month_totals") == "partial this month":
        console.print("[yellow]user month totals began mid-month[/]: a budget per user and month counts this "
                      "month from the restart that added it (TOKENBRAKE_USER_MONTH_TOTALS=true keeps them always)")
    tables = controls_tables(status.get("controls", []))
    for table in tables:
        console.print(table)
    if not tables:
        console.print("no active controls")
    counts = status.get("counts") or {}
    console.print("events: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none yet"))
    sink = (status.get("worker") or {}).get("sink") or {}
    if sink:
        console.print("ClickHouse sink: " + ", ".join(f"{k} {v}" for k, v in sink.items() if v is not None))
