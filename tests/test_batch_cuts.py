"""The same readings cut into different batches give the same scores and alert events.

Kafka hands the monitor whatever batches the consumer happened to fetch; a backtest cuts
its file into fixed batches. Neither may change what an operator is told.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.artifact import TrainedModel
from models.training import train_model
from plantwatch.monitor import Monitor
from plantwatch.settings import load_settings
from stream.schema import SensorReading
from tests.test_pipeline import plant

T0 = 1_795_899_600_000
SIGNALS = ("a", "b", "c")


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    return train_model(plant(8_000, np.random.default_rng(3)), SIGNALS, window=16, scorer="pca")


def stream(seed: int) -> list[SensorReading]:
    """Two assets, interleaved; faults that open and close alerts (and a spike)."""
    rng = np.random.default_rng(seed)
    n = 900
    readings = []
    for a, asset in enumerate(("p1", "p2")):
        data = plant(n, rng)
        start = int(rng.integers(100, 300))
        data[start : start + int(rng.integers(30, 200)), a] += float(rng.uniform(0.5, 1.5))
        data[int(rng.integers(400, 800)), 2] += 3.0
        readings += [
            SensorReading(asset, T0 + i * 1000, dict(zip(SIGNALS, data[i].tolist(), strict=True)))
            for i in range(n)
        ]
    readings.sort(key=lambda r: (r.ts_ms, r.asset))
    return readings


def run(model: TrainedModel, readings: list[SensorReading], bounds: list[int]) -> tuple:
    monitor = Monitor.from_settings(model, load_settings(env={}))
    scores: dict[tuple[str, int], tuple[float, float, bool]] = {}
    events = []
    for a, b in itertools.pairwise(bounds):
        out = monitor.process(readings[a:b], now_ms=T0)
        sc = out.scored
        for j, asset in enumerate(sc.assets):
            key = (asset, int(sc.ts_ms[j]))
            scores[key] = (float(sc.scores[j]), float(sc.thresholds[j]), bool(sc.alert_open[j]))
        events += out.events
    return scores, sorted(events, key=lambda e: (e.asset, e.window_at, e.event, e.alert_id))


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**16), cuts=st.lists(st.integers(1, 1799), min_size=1, max_size=12))
def test_batch_cuts_change_nothing(model: TrainedModel, seed: int, cuts: list[int]) -> None:
    readings = stream(seed)
    whole = run(model, readings, [0, len(readings)])
    assert any(e.event == "opened" and e.kind == "anomaly" for e in whole[1])  # not trivial
    cut = run(model, readings, [0, *sorted(set(cuts)), len(readings)])
    assert cut[0] == whole[0]
    assert cut[1] == whole[1]
