"""`status` and `control list` read well at 80 columns: grouped by scope kind, nothing cut."""

from io import StringIO

from rich.console import Console

from tokenbrake.schemas.codec import dumps, loads
from tokenbrake.streams import cli
from tokenbrake.streams.operator import build_control, control_rows, print_controls
from tokenbrake.streams.status import status_url
from tokenbrake.streams.tables import control_scope, render_status, spend_scope

LONG_TENANT = "acme-corporation-international"
STATUS = {
    "spend": [
        {"scope": f"t={LONG_TENANT}", "today_usd": "12.345678901", "month_usd": "345.1", "today_requests": 12345,
         "today_errors": 3, "today_retries": 2},
        {"scope": f"t={LONG_TENANT}|f=summarize-long-documents", "today_usd": "0.0035", "month_usd": "2",
         "today_requests": 1, "today_errors": 0, "today_retries": 0},
        {"scope": "t=acme|u=h:2c4e8a9b0c1d2e3f4a5b6c7d8e9f0a1b", "today_usd": "1.5", "month_usd": "2",
         "today_requests": 1, "today_errors": 0, "today_retries": 0},
        {"scope": "t=acme|m=claude-3-5-haiku-20241022", "today_usd": "1.5", "month_usd": "2",
         "today_requests": 1, "today_errors": 0, "today_retries": 0}],
    "spend_scopes": 312,
    "controls": [{"scope": f"tenant={LONG_TENANT}/feature=*/user=*/model=*", "action": "downgrade",
                  "downgrade_to": "gpt-4o-mini", "max_rps": None}],
    "counts": {"new": 5, "duplicate": 1}, "worker": {"sink": {"rows_written": 5, "buffered_rows": 0}}}


def at_80(render) -> str:  # noqa: ANN001
    console = Console(file=StringIO(), width=80)
    render(console)
    text = console.file.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines())
    return text


def unfolded(text: str) -> str:
    """The table's text with its borders and line breaks gone: folded values read whole again."""
    cells = [line.strip("│┃ ").split("│")[0].strip() for line in text.splitlines() if line.startswith(("│", "┃"))]
    return "".join(cells)


def test_scopes_read_as_their_values_under_their_kind():
    assert spend_scope("t=acme|f=chat") == ("feature", "acme / chat")
    assert spend_scope("t=acme") == ("tenant", "acme")
    assert control_scope("tenant=acme/feature=*/user=u%2F1/model=*") == ("user", "acme / u/1")
    assert control_scope("tenant=acme/feature=chat/user=*/model=gpt-4o") == ("feature+model",
                                                                             "acme / feature chat / model gpt-4o")


def test_status_groups_by_kind_cuts_nothing_and_says_what_it_left_out():
    text = at_80(lambda c: render_status(STATUS, c))
    titles = [line.strip() for line in text.splitlines() if line.startswith(("spend:", "controls:"))]
    assert titles == ["spend: tenants", "spend: tenant / feature", "spend: tenant / user", "spend: tenant / model",
                      "controls: tenants"]
    assert "…" not in text and "{" not in text  # nothing cut, no Python dicts
    assert LONG_TENANT in unfolded(text) and "h:2c4e8a9b0c1d2e3f4a5b6c7d8e9f0a1b" in unfolded(text)
    assert "12.35" in text and "0.0035" in text  # dollars for people
    assert "4 of 312 scopes shown" in text and "--limit 312" in text.replace("\n", " ")
    assert "events: duplicate 1, new 5" in text


def test_control_list_reads_at_80_columns_and_as_json():
    control = build_control("downgrade", LONG_TENANT, "summarize-long-documents", None, None, None, "gpt-4o-mini",
                            "1h", "runaway agent loop")
    text = at_80(lambda c: print_controls({control.scope.key(): control}, c))
    assert "controls: tenant / feature" in text and "…" not in text
    assert "operator:" in text and "runaway" in text and "to gpt-4o-mini" in text
    rows = loads(dumps(control_rows({control.scope.key(): control})))  # what --json prints
    assert rows[0]["scope"] == control.scope.key() and rows[0]["downgrade_to"] == "gpt-4o-mini"
    assert rows[0]["expires_at"] is not None and rows[0]["reason"] == "runaway agent loop"


def test_status_url_accepts_a_base_url():
    assert status_url("http://127.0.0.1:6070") == "http://127.0.0.1:6070/tokenbrake/status"
    assert status_url("http://127.0.0.1:6070/") == "http://127.0.0.1:6070/tokenbrake/status"
    assert status_url("localhost:6070") == "http://localhost:6070/tokenbrake/status"
    assert status_url("http://h:1/tokenbrake/status") == "http://h:1/tokenbrake/status"


def test_status_says_clearly_when_nothing_answered(capsys, monkeypatch):
    from tokenbrake.streams.broker import free_port

    monkeypatch.delenv("TOKENBRAKE_WEB_PORT", raising=False)
    port = free_port()
    assert cli.main(["status", "--url", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"status: no worker answered at http://127.0.0.1:{port}/tokenbrake/status")
    assert err.count("\n") == 1


def test_a_month_total_not_kept_reads_as_a_dash_not_as_zero():
    user_row = {**STATUS["spend"][2], "month_usd": None}  # per-user month totals are kept only when needed
    text = at_80(lambda c: render_status({**STATUS, "spend": [user_row]}, c))
    row = next(line for line in text.splitlines() if "1.50" in line)
    assert [cell.strip() for cell in row.strip("│").split("│")][1:3] == ["1.50", "-"]


def test_status_says_when_user_month_totals_began_mid_month():
    text = at_80(lambda c: render_status({**STATUS, "user_month_totals": "partial this month"}, c))
    assert "user month totals began mid-month" in text.replace("\n", " ")
    assert "mid-month" not in at_80(lambda c: render_status({**STATUS, "user_month_totals": "kept"}, c))
