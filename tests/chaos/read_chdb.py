"""``python -m tests.chaos.read_chdb DIR totals|dump``: one chdb directory as JSON on stdout.

Run in its own process by the harness: a chdb directory may be opened by one process only,
and a process by one chdb session. ``totals`` gives what the fault suite compares (every
usage row's id and cost, the rollup rows with their versions, the stored controls);
``dump`` every table as text (the privacy scan)."""

from __future__ import annotations

import json
import sys

from tokenbrake.streams.sink.clickhouse import connect

DB = "tokenbrake"


def totals(client) -> dict:  # noqa: ANN001
    q = client.query
    usage = q(f"SELECT event_id, toString(cost_usd), tenant_id, user_id FROM {DB}.usage_events FINAL").result_rows
    raw_rows = q(f"SELECT count() FROM {DB}.usage_events").result_rows[0][0]
    minutes = q(f"SELECT tenant_id, dimension, value, toUnixTimestamp(window_start), requests, toString(cost_usd), "
                f"version FROM {DB}.spend_minute FINAL").result_rows
    user_days = q(f"SELECT tenant_id, user_id, toString(day), requests, toString(cost_usd), version "
                  f"FROM {DB}.spend_user_day FINAL").result_rows
    controls = q(f"SELECT control_id, scope_key, action, downgrade_to, issued_by FROM {DB}.control_events FINAL"
                 ).result_rows
    return {"usage": [list(r) for r in usage], "usage_rows_unmerged": raw_rows,
            "minutes": [list(r) for r in minutes], "user_days": [list(r) for r in user_days],
            "controls": [list(r) for r in controls]}


def dump(client) -> dict:  # noqa: ANN001
    tables = [r[0] for r in client.query(f"SELECT name FROM system.tables WHERE database = '{DB}'").result_rows]
    out = {}
    for table in tables:
        text = client.raw_query(f"SELECT * FROM {DB}.{table} FORMAT TabSeparated")
        out[table] = text.decode("utf-8", errors="replace")
    return out


def main() -> None:
    path, what = sys.argv[1], sys.argv[2]
    client = connect(f"chdb://{path}")
    try:
        exists = client.query(f"SELECT count() FROM system.databases WHERE name = '{DB}'").result_rows[0][0]
        result = ({"usage": [], "usage_rows_unmerged": 0, "minutes": [], "user_days": [], "controls": []}
                  if not exists and what == "totals" else {} if not exists else
                  totals(client) if what == "totals" else dump(client))
    finally:
        client.close()
    json.dump(result, sys.stdout, default=str)


if __name__ == "__main__":
    main()
