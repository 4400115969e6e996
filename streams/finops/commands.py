"""``tokenbrake export`` (and the other FinOps subcommands): argument parsing and one-line
errors; the work is in the modules they call."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any


class CommandError(Exception):
    """A mistake in the command line or the store: printed as one line, exit code 2."""


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"not a date (YYYY-MM-DD): {text!r}") from None


def day_range(args: argparse.Namespace) -> tuple[datetime, datetime]:
    """[from 00:00, the day after --to 00:00): --to is inclusive."""
    lo, hi = parse_day(args.date_from), parse_day(args.date_to)
    if hi < lo:
        raise CommandError("--to is before --from")
    start = datetime(lo.year, lo.month, lo.day, tzinfo=UTC)
    return start, datetime(hi.year, hi.month, hi.day, tzinfo=UTC) + timedelta(days=1)


def _store(settings: Any) -> Any:
    from tokenbrake.streams.finops.store import StoreUnavailable, open_store

    try:
        return open_store(settings.resolved_clickhouse_dsn, settings.clickhouse_database)
    except StoreUnavailable as exc:
        raise CommandError(str(exc)) from None


def _pricebook(settings: Any) -> Any:
    from tokenbrake.streams.price import PriceBook
    from tokenbrake.streams.price.overrides import Overrides

    try:
        return PriceBook(Overrides.load(settings.price_overrides_path), settings.unpriced_fallback_model)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def cmd_export(args: argparse.Namespace) -> int:
    from tokenbrake.streams.cli import _settings

    try:
        settings = _settings()
        start, end = day_range(args)
        output = Path(args.output)
        if output.suffix not in (".csv", ".parquet"):
            raise CommandError("--output must end in .csv or .parquet")
        client = _store(settings)
        try:
            n = _export(args, settings, client, start, end, output)
        finally:
            client.close()
    except CommandError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"{n} rows -> {output}")
    return 0


def _export(args: argparse.Namespace, settings: Any, client: Any, start: datetime, end: datetime,
            output: Path) -> int:
    from tokenbrake.streams.finops import export_files, focus, rollup_sql
    from tokenbrake.streams.finops.model_rates import sync_rates

    db = settings.clickhouse_database
    if args.refresh:
        rollup_sql.refresh_range(client, db, start, end)
    if args.kind == "focus":
        sync_rates(client, db, _pricebook(settings), start.date(), end.date())
        rows = focus.focus_rows(client, db, start, end, args.granularity)
        if output.suffix == ".csv":
            return export_files.write_csv(output, focus.COLUMNS, rows)
        return export_files.write_parquet(output, focus.COLUMNS, rows, focus.MONEY_COLUMNS | focus.PRICE_COLUMNS,
                                          focus.QUANTITY_COLUMNS, focus.DATE_COLUMNS)
    from tokenbrake.streams.finops.queries import run_query

    if args.query == "outcomes":
        from tokenbrake.streams.finops.outcomes import cost_per_outcome, cost_per_outcome_columns

        data = cost_per_outcome(client, db, start, end, args.tenant or "")
        columns = cost_per_outcome_columns()
    else:
        columns, data = run_query(client, db, args.query, start.date(), end.date(), args.tenant or "")
    if output.suffix == ".csv":
        return export_files.write_csv(output, columns, data)
    sample = data[0] if data else {}
    from decimal import Decimal

    return export_files.write_parquet(
        output, columns, data, {c for c, v in sample.items() if isinstance(v, Decimal)},
        {c for c, v in sample.items() if isinstance(v, int) and not isinstance(v, bool)},
        {c for c, v in sample.items() if isinstance(v, datetime)})


def parse_since(text: str) -> timedelta:
    """``30d``, ``12h`` or ``2w``.

    >>> parse_since("30d"), parse_since("12h")
    (datetime.timedelta(days=30), datetime.timedelta(seconds=43200))
    """
    units = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit() or int(text[:-1]) == 0:
        raise CommandError(f"--since takes a duration such as 30d, 12h or 2w, not {text!r}")
    return int(text[:-1]) * units[text[-1]]


def cmd_report(args: argparse.Namespace) -> int:
    from tokenbrake.streams.cli import _settings

    try:
        settings = _settings()
        report = build_report(args, settings)
    except CommandError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    from tokenbrake.streams.finops.report_terminal import print_report

    print_report(report)
    if args.html:
        from tokenbrake.streams.finops.report_html import render

        Path(args.html).write_text(render(report))
        print(f"report written to {args.html}")
    return 0


def build_report(args: argparse.Namespace, settings: Any) -> Any:
    from tokenbrake.streams.decide.policies import PolicyError, load_policies
    from tokenbrake.streams.finops import report_data, rollup_sql
    from tokenbrake.streams.finops.model_rates import sync_rates

    until = parse_day(args.until) + timedelta(days=1) if args.until else datetime.now(UTC).date() + timedelta(days=1)
    end = datetime(until.year, until.month, until.day, tzinfo=UTC)
    start = end - parse_since(args.since)
    start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    asof = min(datetime.now(UTC), end)
    try:
        policies = load_policies(settings.policies_path).budgets if settings.policies_path else []
    except (PolicyError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    db = settings.clickhouse_database
    client = _store(settings)
    try:
        if args.refresh:
            rollup_sql.refresh_range(client, db, start, end)
        sync_rates(client, db, _pricebook(settings), start.date(), end.date())
        return report_data.collect(client, db, start, end, args.tenant or "", policies, asof)
    finally:
        client.close()


def cmd_reprice(args: argparse.Namespace) -> int:
    from tokenbrake.streams.cli import _settings
    from tokenbrake.streams.finops.reprice import reprice
    from tokenbrake.streams.finops.svg import usd

    try:
        settings = _settings()
        start, end = day_range(args)
        if args.overrides:
            if not Path(args.overrides).is_file():
                raise CommandError(f"--overrides: no such file {args.overrides}")
            settings = settings.model_copy(update={"price_overrides_path": Path(args.overrides)})
        pricebook = _pricebook(settings)
        client = _store(settings)
        try:
            result = reprice(client, settings.clickhouse_database, pricebook, start, end)
        finally:
            client.close()
    except CommandError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"re-priced {start:%Y-%m-%d} to {end - timedelta(days=1):%Y-%m-%d}: {result.events} events, "
          f"{result.changed} with a new cost")
    print(f"old total {result.old_total_usd} USD ({usd(result.old_total_usd)})")
    print(f"new total {result.new_total_usd} USD ({usd(result.new_total_usd)})")
    return 0


def cmd_outcomes_load(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from tokenbrake.schemas.codec import loads
    from tokenbrake.schemas.outcome import OutcomeEvent
    from tokenbrake.streams.cli import _settings
    from tokenbrake.streams.finops.outcomes import write_outcomes

    try:
        settings = _settings()
        try:
            lines = Path(args.file).read_bytes().splitlines()
        except OSError as exc:
            raise CommandError(f"cannot read {args.file}: {exc.strerror}") from None
        outcomes, bad = [], 0
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                outcomes.append(OutcomeEvent.model_validate(loads(line)))
            except (ValidationError, ValueError) as exc:
                bad += 1
                if bad <= 20:
                    first = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
                    where = ".".join(map(str, first["loc"])) or "line"
                    print(f"{args.file}:{lineno}: skipped: {where}: {first['msg']}", file=sys.stderr)
        client = _store(settings)
        try:
            n = write_outcomes(client, settings.clickhouse_database, outcomes)
        finally:
            client.close()
    except CommandError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"{n} outcomes stored ({bad} invalid lines skipped)")
    return 0


def cmd_outcomes_sink(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from tokenbrake.streams.cli import _bootstrap, _settings
    from tokenbrake.streams.finops.outcomes_sink import sink_outcomes

    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    try:
        settings = _settings()
        bootstrap = _bootstrap(args, settings, "outcomes sink")
        client = _store(settings)
        try:
            counts = asyncio.run(sink_outcomes(
                bootstrap, settings.topic_outcomes, f"{settings.app_id}-outcomes", client,
                settings.clickhouse_database, exit_when_caught_up=args.exit_when_caught_up,
                report=lambda line: print(line, file=sys.stderr), stop=lambda: bool(stopping)))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        finally:
            client.close()
    except CommandError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(f"{counts.stored} outcomes stored, {counts.invalid} invalid messages skipped")
    return 0


def add_finops_commands(sub: Any) -> None:
    """Register ``export`` (and the report) on the ``tokenbrake`` parser."""
    p = sub.add_parser("export", help="FinOps exports: FOCUS 1.2 cost data, or CSV tables finance asks for")
    kinds = p.add_subparsers(dest="kind", required=True, help="focus: FOCUS 1.2 cost rows; csv: a table")
    for kind, help_text in (("focus", "FinOps FOCUS 1.2 rows per period, tenant, feature, model, token type"),
                            ("csv", "spend | users | outcomes | controls | alerts as CSV or Parquet")):
        k = kinds.add_parser(kind, help=help_text)
        k.add_argument("--from", dest="date_from", required=True, help="first day, YYYY-MM-DD (UTC)")
        k.add_argument("--to", dest="date_to", required=True, help="last day, included")
        k.add_argument("--output", required=True, help="FILE.csv or FILE.parquet")
        k.add_argument("--refresh", action="store_true",
                       help="recompute the rollups of the range from usage_events first")
        if kind == "focus":
            k.add_argument("--granularity", choices=["day", "hour"], default="day", help="one row per day or hour")
        else:
            k.add_argument("--query", required=True, choices=["spend", "users", "outcomes", "controls", "alerts"],
                           help="which table")
            k.add_argument("--tenant", help="one tenant only")
        k.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="spend report: terminal tables, and one self-contained HTML file")
    p.add_argument("--since", default="30d", help="window length ending at --until: 30d, 12h, 2w")
    p.add_argument("--until", help="last day of the window, YYYY-MM-DD (default today, UTC)")
    p.add_argument("--tenant", help="one tenant only")
    p.add_argument("--html", help="also write the report to this HTML file")
    p.add_argument("--refresh", action="store_true", help="recompute the rollups of the window first")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("outcomes", help="business outcomes (cost per outcome): load a file, or sink the topic")
    actions = p.add_subparsers(dest="action", required=True)
    load = actions.add_parser("load", help="validate and store outcomes, one JSON OutcomeEvent per line")
    load.add_argument("file")
    load.set_defaults(func=cmd_outcomes_load)
    sink = actions.add_parser("sink", help="consume the outcomes topic into ClickHouse (a consumer group)")
    sink.add_argument("--bootstrap")
    sink.add_argument("--exit-when-caught-up", action="store_true",
                      help="stop at the end of the topic as it was at start (batch runs, tests)")
    sink.set_defaults(func=cmd_outcomes_sink)

    p = sub.add_parser("reprice", help="recompute stored costs from tokens with corrected prices, and every rollup")
    p.add_argument("--from", dest="date_from", required=True, help="first day, YYYY-MM-DD (UTC)")
    p.add_argument("--to", dest="date_to", required=True, help="last day, included")
    p.add_argument("--overrides", help="price overrides file for this run (default: the configured one)")
    p.set_defaults(func=cmd_reprice)
