"""The settings and the broker address for a command: one line on a mistake, never a traceback."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError


def load_settings():  # noqa: ANN201 - validated as a whole, errors printed plainly
    import os

    from tokenbrake.streams.settings import Settings, unknown_variables

    for warning in unknown_variables(dict(os.environ)):
        print(warning, file=sys.stderr)
    try:
        return Settings()
    except ValidationError as exc:
        print("invalid settings (TOKENBRAKE_* environment):", file=sys.stderr)
        for err in exc.errors():
            print(f"  {'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def bootstrap_of(args: argparse.Namespace, settings, command: str) -> str:  # noqa: ANN001
    """The broker a client command talks to; it never starts the embedded one itself."""
    bootstrap = args.bootstrap or settings.kafka_bootstrap
    if not bootstrap:
        print(f"{command} needs a broker: --bootstrap HOST:PORT or TOKENBRAKE_KAFKA_BOOTSTRAP", file=sys.stderr)
        raise SystemExit(2)
    from tokenbrake.streams.reach import require_broker

    require_broker(bootstrap, command)
    return bootstrap
