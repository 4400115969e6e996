"""``tokenbrake``: run, broker, replay, status, backtest, demo, control."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from pydantic import ValidationError


def _settings():  # noqa: ANN202 - validated as a whole, errors printed plainly
    from streams.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        print("invalid settings (TOKENBRAKE_* environment):", file=sys.stderr)
        for err in exc.errors():
            print(f"  {'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def _bootstrap(args: argparse.Namespace, settings, command: str) -> str:  # noqa: ANN001
    """The broker a client command talks to; it never starts the embedded one itself."""
    bootstrap = args.bootstrap or settings.kafka_bootstrap
    if not bootstrap:
        print(f"{command} needs a broker: --bootstrap HOST:PORT or TOKENBRAKE_KAFKA_BOOTSTRAP", file=sys.stderr)
        raise SystemExit(2)
    return bootstrap


def cmd_run(args: argparse.Namespace) -> int:
    from streams.decide.policies import PolicyError
    from streams.runner import run_worker

    settings = _settings()
    try:
        from streams.worker import build_engine

        build_engine(settings)  # policies, overrides and fallback checked before anything starts
    except (PolicyError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return run_worker(settings)


def cmd_broker(args: argparse.Namespace) -> int:
    from streams.runner import run_broker

    return run_broker(_settings(), args.port)


def cmd_replay(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from streams.broker import ensure_topics
    from streams.publish import publish
    from streams.replay import trace_events
    from streams.runner import topics_of

    settings = _settings()
    bootstrap = _bootstrap(args, settings, "replay")
    start_ms = int(time.time() * 1000)
    events = list(trace_events(Path(args.file), args.format, args.speed, start_ms, args.seed))
    if args.limit:
        events = events[: args.limit]
    pace = args.format != "jsonl" and not args.no_pace
    asyncio.run(ensure_topics(bootstrap, topics_of(settings), {settings.topic_control}))
    with Progress(transient=True) as progress:
        task = progress.add_task(f"replaying {args.file}", total=len(events))
        sent = asyncio.run(publish(bootstrap, settings.topic_usage, events, pace=pace, batch=args.batch,
                                   on_sent=lambda n: progress.update(task, completed=n)))
    print(f"published {sent} events to {settings.topic_usage} at {bootstrap}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from streams.status import fetch_status, render_status

    settings = _settings()
    url = args.url or f"http://{settings.web_host}:{settings.web_port}/tokenbrake/status"
    try:
        status = fetch_status(url)
    except OSError as exc:
        print(f"no worker answered at {url} ({exc}); start one with `tokenbrake run`", file=sys.stderr)
        return 1
    if args.json:
        from schemas.codec import dumps

        sys.stdout.write(dumps(status).decode() + "\n")
    else:
        render_status(status)
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from streams.backtest import counted, in_time_order, read_events, rss_mb, run, write_decisions
    from streams.decide.policies import PolicyError
    from streams.worker import build_engine

    settings = _settings()
    if args.policies:
        settings = settings.model_copy(update={"policies_path": Path(args.policies)})
    try:
        engine = build_engine(settings)
    except (PolicyError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if not Path(args.input).is_file():
        print(f"no such file: {args.input}", file=sys.stderr)
        return 2
    try:
        rss_at = [int(float(n)) for n in args.rss_at.split(",")] if args.rss_at else []
    except ValueError:
        print(f"--rss-at takes event counts, e.g. 500000,1500000 (got {args.rss_at!r})", file=sys.stderr)
        return 2
    invalid = [0]

    def skipped(lineno: int, error: str) -> None:
        invalid[0] += 1
        if invalid[0] <= 20:
            print(f"{args.input}:{lineno}: skipped invalid event: {error}", file=sys.stderr)

    seen = [0]

    def count(events):  # noqa: ANN001, ANN202
        for ev in events:
            seen[0] += 1
            yield ev

    def report(n: int, rss: float) -> None:
        print(f"events={n:>9,} rss_mb={rss:7.1f}", file=sys.stderr, flush=True)

    events = counted(count(in_time_order(read_events(Path(args.input), skipped))), rss_at, report)
    n = write_decisions(run(engine, events), Path(args.output))
    print(f"{seen[0]} events ({invalid[0]} invalid) -> {n} decisions in {args.output}"
          + (f"; rss at the end {rss_mb():.1f} MB" if rss_at else ""))
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    from streams.operator import build_control, list_controls, print_controls, publish_control, run

    settings = _settings()
    bootstrap = _bootstrap(args, settings, "control")
    if args.action == "list":
        print_controls(run(list_controls(settings, bootstrap)))
        return 0
    if not args.tenant or not args.reason:
        print("--tenant and --reason are required", file=sys.stderr)
        return 2
    try:
        control = build_control(args.action, args.tenant, args.feature, args.user, args.model, args.max_rps,
                                args.to_model, args.ttl, args.reason)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    signed = run(publish_control(settings, bootstrap, control))
    print(f"{signed.action} {signed.scope.key()} (control_id={signed.control_id}, key_id={signed.key_id})")
    return 0


def cmd_scenarios(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from streams.demo import _trace_path
    from streams.scenarios import SCENARIO_POLICIES, azure_tokens, generate, write_scenario

    out = Path(args.out)
    tokens = azure_tokens(_trace_path())
    seeds = _seeds(args.seeds)
    volumes = _volumes(args.volume)
    with Progress() as progress:
        task = progress.add_task("writing scenarios", total=len(seeds) * 2 * len(volumes))
        for volume, seed in ((v, s) for v in volumes for s in seeds):
            for name, incidents in ((f"{volume}-incidents-seed{seed}", True), (f"{volume}-clean-seed{seed}", False)):
                events, plan = generate(seed, args.days, tokens, incidents=incidents, scale=args.scale,
                                        volume=volume)
                n = write_scenario(out, name, events, plan)
                progress.console.print(f"{out / name}.jsonl: {n} events, {len(plan)} incidents")
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
    from streams.scenarios import VOLUMES

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

    from schemas.codec import dumps
    from streams.demo import _trace_path
    from streams.evaluate import azure_clean_alerts, evaluate, evaluate_generated
    from streams.scenarios import azure_tokens

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
        report = evaluate_generated(_volumes(args.volume), _seeds(args.seeds), azure_tokens(_trace_path()),
                                    days=args.days, progress=progress)
    if not args.no_azure:
        report["azure_clean_replay_alerts"] = len(azure_clean_alerts(_trace_path()))
    if args.json:
        sys.stdout.write(dumps(report).decode() + "\n")
        return 0
    for volume, rep in report["volumes"].items():
        table = Table(title=f"{volume}: {len(rep['files'])} scenarios, {rep['clean_days']} clean days")
        for col in ("rule", "precision", "recall", "detected/incidents", "median delay (min)", "worst delay (min)",
                    "false alerts/clean day"):
            table.add_column(col, justify="right" if col != "rule" else "left")
        for rule, m in rep["rules"].items():
            table.add_row(rule, str(m["precision"]), str(m["recall"]), f"{m['detected']}/{m['incidents']}",
                          str(m["median_delay_min"]), str(m["worst_delay_min"]),
                          str(m["false_alerts_per_clean_day"]))
        console.print(table)
        for missed in rep["missed"]:
            console.print(f"  missed: {missed}")
    if "azure_clean_replay_alerts" in report:
        console.print(f"alerts on the clean replay of the Azure trace: {report['azure_clean_replay_alerts']}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from schemas.codec import dumps
    from streams.bench import run_bench

    _exit_on_sigterm()
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    results = run_bench(args.events, args.single_events or min(args.events, 50_000), args.probes, args.load, log)
    if args.json:
        sys.stdout.write(dumps(results).decode() + "\n")
    else:
        for key, value in results.items():
            print(f"{key:28} {value}")
    return 0


def _exit_on_sigterm() -> None:
    """SIGTERM becomes a normal exit, so the embedded broker and worker we started are stopped
    by our own cleanup instead of being orphaned."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.demo import run_demo

    _exit_on_sigterm()
    return run_demo(speed=args.speed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenbrake", description="Real-time LLM spend control.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="run the worker (starts the embedded broker if none is configured)") \
        .set_defaults(func=cmd_run)

    p = sub.add_parser("broker", help="run only the embedded broker, in the foreground")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("replay", help="publish usage events from a file")
    p.add_argument("file")
    p.add_argument("--format", choices=["jsonl", "azure", "burstgpt"], default="jsonl")
    p.add_argument("--bootstrap")
    p.add_argument("--speed", type=float, default=60.0, help="trace seconds per wall second (azure, burstgpt)")
    p.add_argument("--no-pace", action="store_true", help="send as fast as possible")
    p.add_argument("--batch", type=int, default=1, help="events per message (JSON array)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--limit", type=int)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("status", help="spend per scope and active controls, from the running worker")
    p.add_argument("--json", action="store_true")
    p.add_argument("--url")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("backtest", help="run the engine over a JSONL file of events, offline")
    p.add_argument("--input", required=True)
    p.add_argument("--policies")
    p.add_argument("--output", required=True)
    p.add_argument("--rss-at", help="print the process's RSS when these event counts are reached, e.g. "
                   "500000,1500000")
    p.set_defaults(func=cmd_backtest)

    p = sub.add_parser("control", help="issue a signed control by hand, or list current controls")
    p.add_argument("action", choices=["block", "throttle", "downgrade", "allow", "list"])
    p.add_argument("--tenant")
    p.add_argument("--feature")
    p.add_argument("--user")
    p.add_argument("--model")
    p.add_argument("--max-rps", type=float)
    p.add_argument("--to-model")
    p.add_argument("--ttl", help="e.g. 30m, 1h, 7d")
    p.add_argument("--reason")
    p.add_argument("--bootstrap")
    p.set_defaults(func=cmd_control)

    p = sub.add_parser("scenarios", help="write seeded, labelled detector scenarios (JSONL)")
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--days", type=int, help="scenario length (default: the volume's own: 9 standard, 8 production)")
    p.add_argument("--scale", type=float, default=1.0, help="traffic multiplier")
    p.add_argument("--volume", default="standard", help="standard, production or both")
    p.set_defaults(func=cmd_scenarios)

    p = sub.add_parser("evaluate", help="precision, recall, delay and false alerts per detector rule on scenarios")
    p.add_argument("--scenarios", help="a directory written by `tokenbrake scenarios`")
    p.add_argument("--seeds", help="generate the scenarios of these seeds on the fly instead, e.g. 1,2,3")
    p.add_argument("--volume", default="both", help="with --seeds: standard, production or both")
    p.add_argument("--days", type=int, help="with --seeds: scenario length (default: the volume's own)")
    p.add_argument("--no-azure", action="store_true", help="skip the clean replay of the Azure trace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="throughput, floor, control latency and memory, on the embedded broker")
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--single-events", type=int, help="events for the one-per-message run (default min(N, 50000))")
    p.add_argument("--probes", type=int, default=40)
    p.add_argument("--load", type=int, default=5000, help="background events/s during the latency probes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="the whole loop on the embedded stack, in under 3 minutes")
    p.add_argument("--speed", type=float, default=60.0)
    p.set_defaults(func=cmd_demo)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
