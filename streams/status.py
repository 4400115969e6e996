"""Read the running worker's state over its HTTP endpoint.

Only one process may open a chdb directory, and the worker holds it; so readers
(``tokenbrake status``, the demo) ask the worker at ``/tokenbrake/status``, and read
ClickHouse directly only when it is a server (http DSN) or the worker has stopped.
"""

from __future__ import annotations

import urllib.request
from typing import Any

from rich.console import Console
from rich.table import Table

from schemas.codec import loads


def fetch_status(url: str, timeout: float = 3.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - operator-given local URL
        return loads(resp.read())


def spend_table(status: dict[str, Any], title: str = "spend today") -> Table:
    table = Table(title=title)
    for col in ("scope", "today $", "month $", "requests", "errors", "retries"):
        table.add_column(col, justify="left" if col == "scope" else "right")
    for row in status.get("spend", []):
        table.add_row(row["scope"], row["today_usd"], row["month_usd"], str(row["today_requests"]),
                      str(row["today_errors"]), str(row["today_retries"]))
    return table


def controls_table(status: dict[str, Any]) -> Table:
    table = Table(title="active controls")
    for col in ("scope", "action", "detail"):
        table.add_column(col)
    for c in status.get("controls", []):
        detail = c.get("downgrade_to") or (f"{c['max_rps']} rps" if c.get("max_rps") else "")
        table.add_row(c["scope"], c["action"], detail or "")
    return table


def render_status(status: dict[str, Any]) -> None:
    console = Console()
    console.print(spend_table(status))
    console.print(controls_table(status))
    worker = status.get("worker", {})
    console.print(f"counts={status.get('counts')} sink={worker.get('sink')}")
