"""The offline commands: ``backtest``, ``scenarios`` and ``evaluate`` (no broker, no worker)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tokenbrake.streams.cli_settings import load_settings


def cmd_backtest(args: argparse.Namespace) -> int:
    from tokenbrake.streams.backtest import counted, in_time_order, read_events, rss_mb, run, write_decisions
    from tokenbrake.streams.decide.named_models import report_named_models
    from tokenbrake.streams.decide.policies import PolicyError
    from tokenbrake.streams.setup import build_engine
    from tokenbrake.streams.tools.replay import TraceFormatError, check_format

    settings = load_settings()
    if not Path(args.input).is_file():
        print(f"backtest: no such input file {args.input}", file=sys.stderr)
        return 2
    try:
        check_format(Path(args.input), args.format)
        rss_at = [int(float(n)) for n in args.rss_at.split(",")] if args.rss_at else []
    except TraceFormatError as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return 2
    except ValueError:
        print(f"backtest: --rss-at takes event counts, e.g. 500000,1500000 (got {args.rss_at!r})", file=sys.stderr)
        return 2
    if args.policies:
        settings = settings.model_copy(update={"policies_path": Path(args.policies)})
    try:
        engine = build_engine(settings)
    except (PolicyError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if not report_named_models(settings.policies_path, settings.price_overrides_path):
        return 2
    invalid, seen = [0], [0]

    def skipped(lineno: int, error: str) -> None:
        invalid[0] += 1
        if invalid[0] <= 20:
            print(f"{args.input}:{lineno}: skipped invalid event: {error}", file=sys.stderr)

    def count(events):  # noqa: ANN001, ANN202
        for ev in events:
            seen[0] += 1
            yield ev

    def report(decisions: int, rss: float) -> None:
        print(f"events={decisions:>9,} rss_mb={rss:7.1f}", file=sys.stderr, flush=True)

    events = counted(count(in_time_order(read_events(Path(args.input), skipped, args.format, args.seed))),
                     rss_at, report)
    decisions = write_decisions(run(engine, events), Path(args.output))
    if not seen[0]:
        print(f"backtest: no valid event in {args.input} ({invalid[0]} invalid; the first reasons are above); "
              "a CSV trace needs --format azure|burstgpt", file=sys.stderr)
        return 1
    print(f"{seen[0]} events ({invalid[0]} invalid) -> {decisions} decisions in {args.output}"
          + (f"; rss at the end {rss_mb():.1f} MB" if rss_at else ""))
    return 0


def cmd_scenarios(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from tokenbrake.streams.tools.replay import azure_trace_path
    from tokenbrake.streams.tools.scenarios import SCENARIO_POLICIES, azure_tokens, generate, write_scenario

    out = Path(args.out)
    tokens = azure_tokens(azure_trace_path())
    seeds = _seeds(args.seeds)
    volumes = _volumes(args.volume)
    with Progress() as progress:
        task = progress.add_task("writing scenarios", total=len(seeds) * 2 * len(volumes))
        for volume, seed in ((v, s) for v in volumes for s in seeds):
            for name, incidents in ((f"{volume}-incidents-seed{seed}", True), (f"{volume}-clean-seed{seed}", False)):
                events, plan = generate(seed, args.days, tokens, incidents=incidents, scale=args.scale,
                                        volume=volume)
                written = write_scenario(out, name, events, plan)
                progress.console.print(f"{out / name}.jsonl: {written} events, {len(plan)} incidents")
                progress.advance(task)
    (out / "policies.yaml").write_text(SCENARIO_POLICIES)
    return 0


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        print(f"--seeds takes integers separated by commas, e.g. 1,2,3 (got {text!r})", file=sys.stderr)
        raise SystemExit(2) from None


def _volumes(text: str) -> list[str]:
    from tokenbrake.streams.tools.scenarios import VOLUMES

    volumes = list(VOLUMES) if text == "both" else text.split(",")
    unknown = [v for v in volumes if v not in VOLUMES]
    if unknown:
        print(f"--volume: unknown {', '.join(unknown)}; known: {', '.join(VOLUMES)} or both", file=sys.stderr)
        raise SystemExit(2)
    return volumes


def cmd_evaluate(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console
    from rich.table import Table

    from tokenbrake.schemas.codec import dumps
    from tokenbrake.streams.tools.evaluate import azure_clean_alerts, evaluate, evaluate_generated
    from tokenbrake.streams.tools.replay import azure_trace_path
    from tokenbrake.streams.tools.scenarios import azure_tokens

    console = Console(stderr=args.json, width=None if sys.stdout.isatty() else 140)
    started = time.monotonic()

    def progress(name: str) -> None:
        console.print(f"evaluated {name} ({time.monotonic() - started:.0f} s)")

    if bool(args.scenarios) == bool(args.seeds):
        print("evaluate needs --scenarios DIR (files from `tokenbrake scenarios`) or --seeds 1,2,3 (generated)",
              file=sys.stderr)
        return 2
    if args.scenarios:
        if not Path(args.scenarios).is_dir():
            print(f"no such directory: {args.scenarios}", file=sys.stderr)
            return 2
        report = evaluate(Path(args.scenarios), progress=progress)
    else:
        report = evaluate_generated(_volumes(args.volume), _seeds(args.seeds), azure_tokens(azure_trace_path()),
                                    days=args.days, progress=progress)
    if not args.no_azure:
        report["azure_clean_replay_alerts"] = len(azure_clean_alerts(azure_trace_path()))
    if args.json:
        sys.stdout.write(dumps(report).decode() + "\n")
        return 0
    for volume, rep in report["volumes"].items():
        table = Table(title=f"{volume}: {len(rep['files'])} scenarios, {rep['clean_days']} clean days")
        for col in ("rule", "precision", "recall", "detected/incidents", "median delay (min)", "worst delay (min)",
                    "false alerts/clean day"):
            table.add_column(col, justify="right" if col != "rule" else "left")
        for rule, figures in rep["rules"].items():
            table.add_row(rule, str(figures["precision"]), str(figures["recall"]),
                          f"{figures['detected']}/{figures['incidents']}", str(figures["median_delay_min"]),
                          str(figures["worst_delay_min"]), str(figures["false_alerts_per_clean_day"]))
        console.print(table)
        for missed in rep["missed"]:
            console.print(f"  missed: {missed}")
    if "azure_clean_replay_alerts" in report:
        console.print(f"alerts on the clean replay of the Azure trace: {report['azure_clean_replay_alerts']}")
    return 0
