"""The benchmark runs end to end on a small store (the figures: `python -m autoresearch.tui.bench`)."""

import math

from autoresearch.tui.bench import report, run_bench


def test_the_benchmark_measures_start_up_idle_cpu_and_live_latency():
    figures = run_bench(experiments=200, points_per=5, idle_s=0.5, writes=3, interval_s=0.3)
    assert figures.metric_points == 1000
    assert 0 < figures.startup_s < 30
    assert 0 <= figures.idle_cpu_percent < 100
    assert figures.latencies_seen == 3 and 0 < figures.latency_median_s < 1.0
    assert not math.isnan(figures.poll_after_write_ms)
    assert "start-up to the first full render" in report(figures)
