"""`autoresearch bench --slots`: the figures' arithmetic, bad input, and a real two-slot bench in containers."""

import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from autoresearch.runner.bench.slots_bench import PROJECTED_BUDGET_S, figures_of, run_slots_bench
from autoresearch.runner.errors import UserError


def row(started: float, ended: float, training: float = 10.0, status: str = "discard"):
    return SimpleNamespace(started_at=started, ended_at=ended, training_seconds=training, status=status,
                           exit_reason="", timings_json={"training": training, "total": ended - started})


def test_the_figures_count_slot_seconds_beyond_training_as_overhead():
    # two slots, four experiments of 10 s training in 24 s of wall: 2 * 24 / 4 = 12 slot-seconds each, 2 overhead
    rows = [row(0, 12), row(0, 12), row(12, 24), row(12, 24)]
    figures = figures_of(2, rows, 10.0, 24.0)
    assert figures.per_hour == pytest.approx(4 / 24 * 3600)
    assert figures.ideal_per_hour == pytest.approx(2 * 3600 / 10)
    assert figures.fraction_of_ideal == pytest.approx(10 / 12)
    assert figures.overhead_s == pytest.approx(2.0)
    assert figures.projected_efficiency == pytest.approx(PROJECTED_BUDGET_S / (PROJECTED_BUDGET_S + 2))
    assert figures.projected_per_hour == pytest.approx(2 * 3600 / (PROJECTED_BUDGET_S + 2))


def test_a_bench_whose_experiments_did_not_score_is_an_error_not_a_figure():
    with pytest.raises(UserError, match="did not all score: crash"):
        figures_of(1, [row(0, 12), row(12, 20, status="crash")], 10.0, 20.0)


@pytest.mark.parametrize("value", ["0", "x", "1,,2", "-1"])
def test_bad_slot_counts_are_one_line_and_exit_2(value):
    done = subprocess.run([sys.executable, "-m", "autoresearch.runner.cli", "bench", f"--slots={value}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--slots takes slot counts of 1 or more" in done.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_two_slots_run_simulated_experiments_at_once_in_real_containers(docker_sandbox, capsys):
    began = time.monotonic()
    [figures] = run_slots_bench([2], train_s=3.0, per_slot=1, think_s=0.5)
    assert figures.experiments == 2 and figures.train_s == pytest.approx(3.0, abs=1.0)
    assert figures.wall_s < 2 * (figures.train_s + figures.overhead_s)  # the two ran at once
    assert 0 < figures.fraction_of_ideal <= 1
    out = capsys.readouterr().out
    assert "loop throughput, simulated training of 3s" in out and "of ideal@300s" in out
    assert time.monotonic() - began < 300
