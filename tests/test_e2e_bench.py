"""Smoke test of the end-to-end broker benchmark (``bench/e2e_broker.py``), tiny settings.

It checks that the script runs through: a model trained and saved, a topic filled, one
``plantwatch run`` subprocess measured from its /metrics and stopped by SIGINT with exit 0,
the River reference, a short paced latency run and the profile summary. No timing is
asserted: numbers belong in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench_scripts import load_bench

REPO = Path(__file__).resolve().parents[1]


def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    quantile = load_bench("e2e_monitor").histogram_quantile
    buckets = {0.01: 0.0, 0.1: 50.0, 1.0: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.75, buckets) == pytest.approx(0.55)
    assert quantile(0.99, {float("inf"): 0.0}) != quantile(0.99, {float("inf"): 0.0})  # NaN


@pytest.mark.integration
def test_quick_run_through_the_broker(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    out = tmp_path / "e2e.json"
    code = load_bench("e2e_broker").main(
        [
            "--scorers",
            "pca",
            "--assets",
            "4",
            "--readings",
            "6000",
            "--history-s",
            "300",
            "--latency-s",
            "2",
            "--memory-assets",
            "0",
            "--profile",
            "pca",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert len(result["rates"]["pca"]) == 1 and result["rates"]["pca"][0] > 0
    assert result["rates"]["river"][0] > 0
    assert result["latency"][0]["windows"] > 0
    assert result["profile"]["total"] > 0
