"""What a service imports (``clients``, ``schemas``) must not pull in the worker's dependencies:
they are the ``worker`` extra, absent from a service's install."""

import subprocess
import sys
from pathlib import Path

from tokenbrake.streams.extras import WORKER_MODULES

ROOT = Path(__file__).resolve().parents[2]


def test_clients_and_schemas_import_nothing_from_the_worker_extra():
    code = ("import sys, tokenbrake.clients, tokenbrake.schemas, tokenbrake.schemas.signing, "
            "tokenbrake.schemas.export\n"
            f"print(sorted(m for m in {sorted(WORKER_MODULES)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_command_line_names_the_extra_when_it_is_missing(monkeypatch, capsys):
    import importlib.util

    from tokenbrake.streams import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faust" else real(name, *a))
    monkeypatch.delitem(sys.modules, "faust", raising=False)
    assert cli.main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "faust-streaming" in err and "tokenbrake[worker]" in err
