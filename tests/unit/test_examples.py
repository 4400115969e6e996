"""What the README hands a new user works as written."""

import os
import subprocess
import sys
from pathlib import Path

from tokenbrake.streams.decide.named_models import check_policies_file, report_named_models
from tokenbrake.streams.decide.policies import load_policies
from tokenbrake.streams.settings import Settings
from tokenbrake.streams.setup import build_engine

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_policies_for_real_use_are_valid_and_quiet():
    path = ROOT / "examples" / "policies.yaml"
    check = check_policies_file(path)
    assert check.errors == [] and check.warnings == []
    assert [b.id for b in load_policies(path).budgets] == ["tenant-daily", "free-tier-monthly", "user-hourly"]
    build_engine(Settings(policies_path=path))  # the worker starts with it (detectors, rolling windows)


def test_the_demo_and_bench_policies_start_the_worker_without_a_warning(tmp_path, capsys):
    from tokenbrake.streams.tools.bench import BENCH_POLICIES
    from tokenbrake.streams.tools.demo import POLICIES

    bench = tmp_path / "bench_policies.yaml"
    bench.write_text(BENCH_POLICIES)
    for path in (POLICIES, bench):
        check = check_policies_file(path)
        assert check.errors == [] and check.warnings == [], path
        assert report_named_models(path) is True  # what `tokenbrake run` prints at start-up
    assert capsys.readouterr().err == ""
    assert "probe" in {b.scope.tier for b in load_policies(bench).budgets}  # a tier the check would warn about


def test_the_example_service_without_a_bootstrap_says_so_in_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENBRAKE_")}
    out = subprocess.run([sys.executable, "-m", "examples.service"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("set TOKENBRAKE_KAFKA_BOOTSTRAP=HOST:PORT")
