"""Smoke test of the per-batch latency benchmark (``bench/batch_latency.py``), tiny settings."""

from __future__ import annotations

import pytest

from tests.bench_scripts import load_bench


def test_batch_latency_bench_times_every_batch(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("batch_latency")
    args = ["--assets", "3", "--per-asset", "2", "--history-s", "300", "--live-s", "40"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    # 40 s of readings, 2 per batch: 20 batches, the first 5 reported apart.
    assert "3 assets x 2 readings = 6 readings per batch, 15 batches after the first 5" in out
    assert "bench/batch_latency.py --assets 3" in out
