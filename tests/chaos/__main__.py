"""``python -m tests.chaos [scenario ...] [--runs N] [--seed S] [--events N]``: run fault
scenarios outside pytest and print their figures (table, then JSON). Exit 1 if any failed."""

from __future__ import annotations

import argparse
import json
import random
import sys

from tests.chaos import scenarios, scenarios_input
from tests.chaos.report import lab, table, write_json

NAMES = {"kill9": scenarios.kill9, "rebalance": scenarios.rebalance, "outage": scenarios.outage,
         "replay": scenarios.replay, "hostile": scenarios_input.hostile, "privacy": scenarios_input.privacy}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("names", nargs="*", default=list(NAMES), metavar="scenario")
    parser.add_argument("--runs", type=int, default=1, help="repeat each scenario (new seed each run)")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: random, printed)")
    parser.add_argument("--events", type=int, default=None, help="events per scenario (default: its own)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    print(f"chaos: first seed {seed}", flush=True)
    with lab() as the_lab:
        for name in args.names:
            for run in range(args.runs):
                kwargs = {"n": args.events} if args.events else {}
                fig = NAMES[name](the_lab, seed + run, **kwargs)
                fig["run"] = run + 1
                the_lab.figures.append(fig)
                print(table([fig]), flush=True)
        print(table(the_lab.figures))
        print(json.dumps(the_lab.figures, default=str))
        write_json(the_lab.figures)
    return 0 if all(f["ok"] for f in the_lab.figures) else 1


if __name__ == "__main__":
    sys.exit(main())
