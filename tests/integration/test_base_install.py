"""A service's install: ``pip install tokenbrake`` (no extra) into a fresh venv is what a
service needs (aiokafka, orjson, pydantic), with no Faust, chdb or River, and the command
line says which extra it needs instead of a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE = """
import importlib.util, sys
from tokenbrake.clients import KillSwitch, UsageReporter, from_openai_usage
from tokenbrake.schemas import ControlEvent, UsageEvent
absent = [m for m in ("faust", "chdb", "river", "clickhouse_connect", "pydantic_settings", "genai_prices")
          if importlib.util.find_spec(m) is not None]
print("present:" + ",".join(absent))
"""


def _run(*cmd: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False)


def test_the_base_install_is_what_a_service_needs(tmp_path: Path) -> None:
    src = tmp_path / "src"  # build from a copy: setuptools writes build/ and *.egg-info beside the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("schemas", "streams", "detectors", "clients"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", venv).returncode == 0
    # as the README tells a service owner: pip install from a local path (or a git URL); the build
    # backend and the three dependencies come from the package registry (pip's cache after the first run)
    installed = _run(venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", src)
    assert installed.returncode == 0, installed.stderr

    service = _run(venv / "bin" / "python", "-c", SERVICE)
    assert service.returncode == 0, service.stderr
    assert service.stdout.strip() == "present:"  # none of the worker's dependencies came along

    cli = _run(venv / "bin" / "tokenbrake", "status")
    assert cli.returncode == 2
    assert cli.stderr.count("\n") == 1 and "pip install 'tokenbrake[worker]'" in cli.stderr, cli.stderr
