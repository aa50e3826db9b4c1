"""Idle assets leave memory and come back exactly where they were (window.idle_evict_ms)."""

from __future__ import annotations

import numpy as np
import pytest

from models.artifact import TrainedModel
from models.training import train_model
from plantwatch.monitor import Monitor
from plantwatch.settings import load_settings
from stream.schema import SensorReading

T0 = 1_795_899_600_000
SIGNALS = ("a", "b")


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 1))
    data = np.hstack([x, 2 * x]) + rng.normal(0, 0.05, (3000, 2))
    return train_model(data, SIGNALS, window=8, scorer="pca")


def reading(asset: str, i: int, rng: np.random.Generator) -> SensorReading:
    x = float(rng.normal())
    return SensorReading(asset, T0 + i * 1000, {"a": x, "b": 2 * x})


def feed(monitor: Monitor, asset: str, steps: range, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    scores: list[float] = []
    for i in steps:
        out = monitor.process([reading(asset, i, rng)], now_ms=T0 + i * 1000)
        scores.extend(out.scored.scores.tolist())
    return scores


def test_an_idle_asset_is_evicted_and_restored_on_its_next_reading(model: TrainedModel) -> None:
    settings = load_settings(env={}, sets=["window.idle_evict_ms=60000"])
    evicting = Monitor.from_settings(model, settings)
    keeping = Monitor.from_settings(model, load_settings(env={}, sets=["window.idle_evict_ms=0"]))
    for monitor in (evicting, keeping):
        feed(monitor, "quiet", range(0, 50), seed=1)
        # Another asset keeps talking for two minutes of reading time: "quiet" is idle.
        feed(monitor, "busy", range(50, 170), seed=2)
    assert evicting.evict_idle() == ["quiet"]
    assert keeping.evict_idle() == []
    assert evicting.assets == ["busy"] and evicting.parked_assets == ["quiet"]
    # What is parked is still there for the checkpoint.
    assert evicting.snapshot_asset("quiet") == keeping.snapshot_asset("quiet")
    # Back again: the same scores as a monitor that never let it go.
    back_evicted = feed(evicting, "quiet", range(170, 200), seed=3)
    back_kept = feed(keeping, "quiet", range(170, 200), seed=3)
    assert back_evicted == back_kept and len(back_evicted) > 0
    assert "quiet" in evicting.assets and evicting.parked_assets == []


def test_an_asset_with_an_open_alert_is_not_evicted(model: TrainedModel) -> None:
    sets = ["window.idle_evict_ms=60000", "alert.k=1", "alert.n=1", "alert.m=1000"]
    sets += ["threshold.kind=fixed", "threshold.grace=0"]
    monitor = Monitor.from_settings(model, load_settings(env={}, sets=sets))
    feed(monitor, "p", range(0, 40), seed=1)
    # A fault: b no longer follows a.
    faulty = [SensorReading("p", T0 + i * 1000, {"a": 3.0, "b": -6.0}) for i in range(40, 60)]
    monitor.process(faulty, now_ms=T0 + 60_000)
    assert monitor.open_alerts() == 1
    feed(monitor, "other", range(60, 200), seed=2)
    assert "p" not in monitor.evict_idle()
    assert "p" in monitor.assets


def test_a_parked_snapshot_of_another_model_starts_the_asset_afresh(model: TrainedModel) -> None:
    monitor = Monitor.from_settings(model, load_settings(env={}))
    monitor.park("p", {"v": 999})
    rng = np.random.default_rng(0)
    out = monitor.process([reading("p", 0, rng)], now_ms=T0)
    assert [asset for asset, _ in out.not_restored] == ["p"]
    assert monitor.assets == ["p"]
