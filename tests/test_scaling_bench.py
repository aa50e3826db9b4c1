"""Smoke test of the scaling benchmark (``bench/bench_scaling.py``), tiny settings."""

from __future__ import annotations

import pytest

from tests.bench_scripts import load_bench


def test_scaling_bench_runs_and_judges_every_asset(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("bench_scaling")
    model = bench.train(8, "pca")
    row = bench.run(model, 30, 5, 50)
    # Every asset fills its window of 8, then has 5 more readings: 6 windows judged each.
    assert row["readings"] == 30 * 13 and row["windows"] == 30 * 6
    assert row["rate"] > 0 and row["scored_rate"] > 0
    alone = bench.run(model, 30, 5, 50, drift_side_by_side=False)
    assert alone["windows"] == row["windows"]
    assert bench.main(["--assets", "10,20", "--scored", "3", "--window", "8", "--batch", "40"]) == 0
    out = capsys.readouterr().out
    assert "| 10 |" in out and "| 20 |" in out and "bench_scaling.py --assets 10,20" in out
