"""The bench's latency quantiles are nearest-rank (the ceil(q * n)-th smallest probe), its rates
count what was observed between the 10% and 90% marks, and its memory growth is the worker's per
100,000 events."""

from __future__ import annotations

from tokenbrake.streams.tools.bench_figures import nearest_rank, rss_growth, steady_rate


def test_nearest_rank_of_200_probes():
    probes = [float(i) for i in range(1, 201)]
    assert nearest_rank(probes, 0.50) == 100.0
    assert nearest_rank(probes, 0.90) == 180.0
    assert nearest_rank(probes, 0.99) == 198.0  # two probes above it, not one


def test_nearest_rank_of_few_probes_is_the_maximum_at_p99():
    assert nearest_rank([5.0, 7.0, 9.0], 0.99) == 9.0
    assert nearest_rank([5.0], 0.5) == 5.0
    assert nearest_rank([float(i) for i in range(1, 41)], 0.99) == 40.0


def test_rss_growth_is_per_100k_events_over_the_second_half():
    assert rss_growth(300.0, 330.0, 200_000) == 30.0  # 30 MB over 100,000 events
    assert rss_growth(None, 330.0, 200_000) is None  # a run too short to reach half
    assert rss_growth(300.0, 290.0, 50_000) == -40.0  # memory given back shows as such


def test_steady_rate_counts_what_was_observed_between_the_marks():
    assert steady_rate((10.0, 20_000), (12.0, 45_000)) == 12_500  # flushes of 20,000: jumps past 10%
    assert steady_rate((10.0, 5_000), (14.0, 45_000)) == 10_000
    assert steady_rate((10.0, 50_000), (10.0, 50_000)) is None  # both marks passed in one flush
    assert steady_rate(None, (12.0, 45_000)) is None  # the run ended before 10%
