"""bench/process.py: many-variable process data at minute cadence, as deployed.

52 signals every 3 minutes from slow disturbances, 500 normal training rows: before the
cross-fitted calibration, fault-free test runs had 15 % of their rows under an alert
(docs/BENCHMARKS.md). Runs the bench's own generator through ``plantwatch backtest``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.bench_scripts import load_bench

process = load_bench("process")
RUN = {"signals": 52, "train": 500, "test": 960, "onset": 160, "sets": []}


@pytest.mark.parametrize("seed", [0, 1])
def test_a_fault_free_run_of_a_many_signal_plant_is_not_a_flood(seed: int, tmp_path: Path) -> None:
    r = process.run_one("normal", seed, work=tmp_path, **RUN)
    assert r["false_alerts"] <= 2, r  # in two days of 3-minute readings
    assert r["fp"] / (r["fp"] + r["tn"]) < 0.05, r


def test_a_frozen_sensor_among_52_is_found_within_the_hour_and_held(tmp_path: Path) -> None:
    r = process.run_one("stuck", 0, work=tmp_path, **RUN)
    assert r["detected"] and r["delay"] <= 40, r
    assert r["false_alerts"] == 0, r
    assert r["tp"] / (r["tp"] + r["fn"]) > 0.9, r


def test_the_textbook_reference_flags_a_broken_relation_and_little_else() -> None:
    rng = np.random.default_rng(0)
    plant = process.Plant.make(rng, 20)
    history = plant.observe(*plant.run(rng, 2000))
    run = plant.observe(*plant.run(rng, 2000))
    flags = process.classic_pca(history, run)
    assert flags.mean() < 0.1
    j = int(plant.measured()[0])
    run[:, j] += 20 * plant.noise[j] * plant.unit[j]
    assert process.classic_pca(history, run).mean() > 0.9
