"""`tokenbrake bench` runs end to end and prints every figure the README promises. Speed is
not asserted here (benchmarks print numbers; timed tests flake): only that each figure is a
real measurement or an explicit null, never a made-up zero."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_bench_prints_every_figure_on_a_small_run(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tokenbrake.streams", "bench", "--events", "3000", "--probes", "3",
                           "--load", "500", "--json"], cwd=tmp_path, capture_output=True, timeout=240,
                          env={k: v for k, v in os.environ.items() if not k.startswith("TOKENBRAKE_")})
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    results = json.loads(done.stdout)
    for key in ("events_per_s", "events_per_s_single", "stored_events_per_s", "stored_events_per_s_single",
                "floor_events_per_s", "floor_events_per_s_single", "control_latency_ms_p50",
                "control_latency_ms_p90", "control_latency_ms_p99", "control_latency_ms_max", "rss_mb", "rss_mb_single", "validate_us_per_event", "engine_us_per_event",
                "cpu_us_per_event", "cpu_us_per_event_single", "rss_growth_mb_per_100k_events"):
        assert key in results, key
    for key in ("events_per_s", "events_per_s_single", "stored_events_per_s", "stored_events_per_s_single"):
        assert results[key] is None or results[key] > 0, (key, results[key])  # too short to measure: null
    assert results["floor_events_per_s"] > 0 and results["floor_events_per_s_single"] > 0
    assert results["probes_seen"] == results["probes"] == 3
    latency = [results[f"control_latency_ms_{q}"] for q in ("p50", "p90", "p99", "max")]
    assert latency == sorted(latency) and latency[-1] > 0, latency  # nearest-rank quantiles of the probes
    assert set(results["rss_mb"]) == {"25%", "50%", "100%"} and all(v > 0 for v in results["rss_mb"].values())
    end = results["rss_mb_at_end"]  # the 100% figure, per process (a run this short may be done before the
    assert set(end) == {"worker", "writer"} and end["worker"] > 0 and end["writer"] >= 0, end  # writer starts)
    for key in ("cpu_us_per_event", "cpu_us_per_event_single"):  # measured with the rate, or both null
        cpu, rate = results[key], results[key.replace("cpu_us_per_event", "events_per_s")]
        assert (cpu is None) == (rate is None), (key, cpu, rate)
        if cpu is not None:
            assert set(cpu) == {"worker", "writer", "broker", "total"} and cpu["worker"] > 0, cpu
    assert not list(tmp_path.glob("*-data"))  # nothing left in the working directory
