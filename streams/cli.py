"""``tokenbrake``: run, broker, replay, status, backtest, demo, control, pager, alerts."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from tokenbrake.streams.cli_offline import cmd_backtest, cmd_evaluate, cmd_scenarios
from tokenbrake.streams.cli_settings import bootstrap_of as _bootstrap
from tokenbrake.streams.cli_settings import load_settings as _settings


def cmd_run(args: argparse.Namespace) -> int:
    from tokenbrake.streams.decide.policies import PolicyError
    from tokenbrake.streams.runner import run_worker

    settings = _settings()
    try:
        from tokenbrake.streams.setup import build_engine

        build_engine(settings)  # policies, overrides and fallback checked before anything starts
        if settings.paging_routes_path is not None:
            from tokenbrake.streams.paging.commands import load_checked

            load_checked(settings)  # the routes file and the secrets it names, before the pager starts
    except (PolicyError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    from tokenbrake.streams.decide.named_models import report_named_models
    from tokenbrake.streams.reach import require_broker, require_free_port

    if not report_named_models(settings.policies_path, settings.price_overrides_path):
        return 2
    require_free_port(settings.web_host, settings.web_port, "run")
    if settings.kafka_bootstrap:
        require_broker(settings.kafka_bootstrap, "run")
    return run_worker(settings)


def cmd_broker(args: argparse.Namespace) -> int:
    from tokenbrake.streams.runner import run_broker

    return run_broker(_settings(), args.port)


def cmd_replay(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from tokenbrake.streams.broker import ensure_topics
    from tokenbrake.streams.runner import topics_of
    from tokenbrake.streams.tools.publish import publish
    from tokenbrake.streams.tools.replay import TraceFormatError, check_format, trace_events

    settings = _settings()
    try:
        check_format(Path(args.file), args.format)
    except TraceFormatError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    bootstrap = _bootstrap(args, settings, "replay")
    start_ms = int(time.time() * 1000)
    seed = args.seed
    if seed is None and args.format != "jsonl":  # new event ids on every replay, unless told to repeat one
        import random

        seed = random.SystemRandom().randrange(1 << 31)
        print(f"seed={seed} (--seed {seed} repeats this replay, event ids included)", file=sys.stderr)
    try:
        events = list(trace_events(Path(args.file), args.format, args.speed, start_ms, seed or 0))
    except (ValueError, KeyError) as exc:  # a bad line past the first
        print(f"replay: {args.file}: {exc}", file=sys.stderr)
        return 2
    if args.limit:
        events = events[: args.limit]
    pace = args.format != "jsonl" and not args.no_pace
    asyncio.run(ensure_topics(bootstrap, topics_of(settings), {settings.topic_control}, **settings.kafka_kwargs()))
    with Progress(transient=True) as progress:
        task = progress.add_task(f"replaying {args.file}", total=len(events))
        sent = asyncio.run(publish(bootstrap, settings.topic_usage, events, pace=pace, batch=args.batch,
                                   on_sent=lambda n: progress.update(task, completed=n),
                                   connection=settings.kafka_kwargs()))
    print(f"published {sent} events to {settings.topic_usage} at {bootstrap}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import os

    from tokenbrake.streams.status import fetch_status, recorded_worker_url, render_status, status_url

    settings = _settings()
    if args.url:
        url = status_url(args.url)
    elif "TOKENBRAKE_WEB_PORT" not in os.environ and (found := recorded_worker_url(settings.home)):
        url = found  # the worker running with this TOKENBRAKE_HOME said where it listens
    else:
        url = f"http://{settings.web_host}:{settings.web_port}/tokenbrake/status"
    if args.limit is not None:
        url += ("&" if "?" in url else "?") + f"limit={args.limit}"
    try:
        status = fetch_status(url)
    except OSError as exc:
        reason = getattr(exc, "reason", None) or exc
        print(f"status: no worker answered at {url} ({reason}); start one with `tokenbrake run`, or give "
              "its address with --url http://HOST:PORT", file=sys.stderr)
        return 1
    except ValueError:
        print(f"status: {url} answered, but not with a tokenbrake status (JSON); give the worker's address "
              "with --url http://HOST:PORT", file=sys.stderr)
        return 1
    if not isinstance(status, dict) or "spend" not in status:
        print(f"status: {url} answered, but not with a tokenbrake status; give the worker's address "
              "with --url http://HOST:PORT", file=sys.stderr)
        return 1
    if args.json:
        from tokenbrake.schemas.codec import dumps

        sys.stdout.write(dumps(status).decode() + "\n")
    else:
        render_status(status)
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    from tokenbrake.streams.operator import build_control, list_controls, print_controls, publish_control, run

    settings = _settings()
    bootstrap = _bootstrap(args, settings, "control")
    if args.action == "list":
        controls = run(list_controls(settings, bootstrap))
        if args.json:
            from tokenbrake.schemas.codec import dumps
            from tokenbrake.streams.operator import control_rows

            sys.stdout.write(dumps(control_rows(controls)).decode() + "\n")
        else:
            print_controls(controls)
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
    from aiokafka.errors import KafkaError

    try:  # the topic is read first (the next sequence follows the highest on it), then written
        signed = run(publish_control(settings, bootstrap, control))
    except (KafkaError, RuntimeError, TimeoutError, OSError) as exc:
        print(f"control not published: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"{signed.action} {signed.scope.key()} (control_id={signed.control_id}, seq={signed.seq}, "
          f"key_id={signed.key_id})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from tokenbrake.schemas.codec import dumps
    from tokenbrake.streams.tools.bench import run_bench

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


def cmd_pager(args: argparse.Namespace) -> int:
    from tokenbrake.streams.paging.commands import run_pager

    settings = _settings()
    return run_pager(settings, _bootstrap(args, settings, "pager"))


def cmd_alerts(args: argparse.Namespace) -> int:
    from tokenbrake.streams.paging.commands import cmd_alerts_list, cmd_alerts_test

    settings = _settings()
    if args.action == "test":
        if not args.route:
            print("alerts test needs --route ID (a route of the routes file)", file=sys.stderr)
            return 2
        return cmd_alerts_test(settings, args.route)
    return cmd_alerts_list(settings, _bootstrap(args, settings, "alerts list"), args.json)


def cmd_demo(args: argparse.Namespace) -> int:
    from tokenbrake.streams.tools.demo import run_demo

    _exit_on_sigterm()
    return run_demo(speed=args.speed)


def main(argv: list[str] | None = None) -> int:
    from tokenbrake.streams.extras import missing_extra_message

    if (missing := missing_extra_message()) is not None:  # a service's base install: say which extra
        print(missing, file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="tokenbrake", description="Real-time LLM spend control.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="run the worker (starts the embedded broker if none is configured)") \
        .set_defaults(func=cmd_run)

    p = sub.add_parser("broker", help="run only the embedded broker, in the foreground")
    p.add_argument("--port", type=int, help="port to listen on (default: a free one, printed as bootstrap=)")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("replay", help="publish usage events from a file")
    p.add_argument("file", help="JSONL of usage events, or a CSV trace (Azure LLM inference, BurstGPT)")
    p.add_argument("--format", choices=["jsonl", "azure", "burstgpt"], default="jsonl",
                   help="jsonl: events as they are; azure/burstgpt: a trace turned into tenants, features, users "
                   "and models, stamped from now (default jsonl)")
    p.add_argument("--bootstrap", help="HOST:PORT of the broker (default TOKENBRAKE_KAFKA_BOOTSTRAP)")
    p.add_argument("--speed", type=float, default=60.0, help="trace seconds per wall second (azure, burstgpt)")
    p.add_argument("--no-pace", action="store_true", help="send as fast as possible")
    p.add_argument("--batch", type=int, default=1, help="events per message (JSON array)")
    p.add_argument("--seed", type=int, help="azure/burstgpt: attribute tenants, users and event ids with this "
                   "seed (default: a new one each run, printed; the same seed repeats the same events, which "
                   "the worker then counts as duplicates)")
    p.add_argument("--limit", type=int, help="publish at most N events")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("status", help="spend per scope and active controls, from the running worker")
    p.add_argument("--json", action="store_true", help="print the worker's status as JSON")
    p.add_argument("--url", help="the worker's address, http://HOST:PORT (default: the worker started with "
                   "this TOKENBRAKE_HOME, else TOKENBRAKE_WEB_HOST:TOKENBRAKE_WEB_PORT)")
    p.add_argument("--limit", type=int, help="scopes to show, the most spent today first (default 50; 0: all)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("backtest", help="run the engine over a JSONL file of events (or a trace), offline")
    p.add_argument("--input", required=True, help="JSONL of usage events, or a CSV trace with --format")
    p.add_argument("--format", choices=["jsonl", "azure", "burstgpt"], default="jsonl",
                   help="as replay's; a trace is stamped from 2026-01-05T00:00Z at its own pace (default jsonl)")
    p.add_argument("--seed", type=int, default=7, help="azure/burstgpt: attribution seed (default 7)")
    p.add_argument("--policies", help="policies file (default TOKENBRAKE_POLICIES_PATH)")
    p.add_argument("--output", required=True, help="where to write one JSON decision per line")
    p.add_argument("--rss-at", help="print the process's RSS when these event counts are reached, e.g. "
                   "500000,1500000")
    p.set_defaults(func=cmd_backtest)

    p = sub.add_parser("control", help="issue a signed control by hand, or list current controls")
    p.add_argument("action", choices=["block", "throttle", "downgrade", "allow", "list"])
    p.add_argument("--tenant", help="the tenant the control is for (required, except for list)")
    p.add_argument("--feature", help="narrow the scope to one feature of the tenant")
    p.add_argument("--user", help="narrow the scope to one user (the pseudonym the reporter sends)")
    p.add_argument("--model", help="narrow the scope to one model")
    p.add_argument("--max-rps", type=float, help="throttle: calls per second admitted")
    p.add_argument("--to-model", help="downgrade: the model services call instead")
    p.add_argument("--ttl", help="how long it holds, e.g. 30m, 1h, 7d (default: until `control allow`)")
    p.add_argument("--reason", help="why, for the audit trail (required, except for list)")
    p.add_argument("--bootstrap", help="HOST:PORT of the broker (default TOKENBRAKE_KAFKA_BOOTSTRAP)")
    p.add_argument("--json", action="store_true", help="list: print the controls as JSON")
    p.set_defaults(func=cmd_control)

    p = sub.add_parser("scenarios", help="write seeded, labelled detector scenarios (JSONL)")
    p.add_argument("--out", required=True, help="directory for <name>.jsonl, <name>.labels.json and policies.yaml")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds: one pair of scenarios per seed")
    p.add_argument("--days", type=int, help="scenario length (default: the volume's own: 9 standard, 8 production)")
    p.add_argument("--scale", type=float, default=1.0, help="traffic multiplier: 2 doubles the calls per minute")
    p.add_argument("--volume", default="standard", help="standard, production or both")
    p.set_defaults(func=cmd_scenarios)

    p = sub.add_parser("evaluate", help="precision, recall, delay and false alerts per detector rule on scenarios")
    p.add_argument("--scenarios", help="a directory written by `tokenbrake scenarios`")
    p.add_argument("--seeds", help="generate the scenarios of these seeds on the fly instead, e.g. 1,2,3")
    p.add_argument("--volume", default="both", help="with --seeds: standard, production or both")
    p.add_argument("--days", type=int, help="with --seeds: scenario length (default: the volume's own)")
    p.add_argument("--no-azure", action="store_true", help="skip the clean replay of the Azure trace")
    p.add_argument("--json", action="store_true", help="print the report as JSON only (progress on stderr)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="throughput, floor, control latency and memory, on the embedded broker")
    p.add_argument("--events", type=int, default=200_000, help="events for the throughput runs")
    p.add_argument("--single-events", type=int, help="events for the one-per-message run (default min(N, 50000))")
    p.add_argument("--probes", type=int, default=200, help="control-latency probes (a p99 needs 100 or more: "
                   "over fewer it is the maximum)")
    p.add_argument("--load", type=int, default=5000, help="background events/s during the latency probes")
    p.add_argument("--json", action="store_true", help="print the results as JSON (progress on stderr)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("pager", help="deliver alerts to the routes file's receivers (`run` starts one itself)")
    p.add_argument("--bootstrap", help="Kafka bootstrap (default TOKENBRAKE_KAFKA_BOOTSTRAP)")
    p.set_defaults(func=cmd_pager)

    p = sub.add_parser("alerts", help="send a test alert through a route, or list open incidents")
    p.add_argument("action", choices=["test", "list"], help="test: trigger then resolve through one route; "
                   "list: open incidents")
    p.add_argument("--route", help="route id (alerts test)")
    p.add_argument("--bootstrap", help="Kafka bootstrap (default TOKENBRAKE_KAFKA_BOOTSTRAP)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_alerts)

    p = sub.add_parser("demo", help="the whole loop on the embedded stack, in under 3 minutes")
    p.add_argument("--speed", type=float, default=60.0,
                   help="trace seconds per wall second (default 60: the 58-minute trace in about a minute)")
    p.set_defaults(func=cmd_demo)

    from tokenbrake.streams.finops.commands import add_finops_commands

    add_finops_commands(sub)

    args = parser.parse_args(argv)
    from aiokafka.errors import KafkaError

    try:
        return int(args.func(args) or 0)
    except KafkaError as exc:  # the broker went away mid-command (one that is not there is checked first)
        print(f"{args.command}: Kafka failed: {exc}; is the broker up?", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
