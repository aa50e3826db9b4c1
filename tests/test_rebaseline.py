"""Re-baselining: a steady new operating point ends its alert; a broken relation never does."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.artifact import TrainedModel
from models.rebaseline import BaselineSubspace, BaselineWatch, RebaselineConfig
from models.training import train_model
from plantwatch.monitor import Monitor
from plantwatch.settings import load_settings
from stream.schema import SensorReading
from tests.test_pipeline import plant

T0 = 1_795_899_600_000
SIGNALS = ("a", "b", "c")
HOUR = 3600


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    return train_model(plant(20_000, np.random.default_rng(11)), SIGNALS, window=16, scorer="pca")


def replay(monitor: Monitor, data: np.ndarray, asset: str = "p1") -> tuple[list, list, list]:
    events, notices, open_at = [], [], []
    for start in range(0, len(data), 600):
        readings = [
            SensorReading(asset, T0 + i * 1000, dict(zip(SIGNALS, data[i].tolist(), strict=True)))
            for i in range(start, min(start + 600, len(data)))
        ]
        out = monitor.process(readings, now_ms=T0)
        events.extend(out.events)
        notices.extend(out.notices)
        open_at.append(monitor.open_alerts())
    return events, notices, open_at


def test_the_subspace_keeps_what_moves_together_and_never_the_whole_space() -> None:
    rng = np.random.default_rng(0)
    sub = BaselineSubspace.fit(rng.normal(size=(500, 4)))  # nothing correlated
    assert sub.basis.shape[0] <= 3
    assert np.allclose(sub.basis @ sub.basis.T, np.eye(sub.basis.shape[0]), atol=1e-9)


def test_a_set_point_step_ends_in_a_new_baseline(model: TrainedModel) -> None:
    rng = np.random.default_rng(5)
    data = plant(4 * HOUR, rng)
    # The operating point moves: every signal follows the load, as in training, but the
    # load now sits far above anything the history saw, for good.
    data[HOUR:] += np.array([1.5, 3.0, -1.5])
    monitor = Monitor.from_settings(model, load_settings(env={}))
    events, notices, open_at = replay(monitor, data)
    opened = [e for e in events if e.event == "opened"]
    resolved = [e for e in events if e.event == "resolved"]
    assert opened, "the step should raise an alert at first"
    assert any(e.reason == "rebaselined" for e in resolved)
    assert [n.notice for n in notices].count("rebaselined") >= 1
    notice = next(n for n in notices if n.notice == "rebaselined")
    assert notice.asset == "p1" and notice.detail["alert_ids"]
    # Within the steady time (30 min) plus a margin, and then quiet for the rest of the run.
    assert open_at[-1] == 0
    alerted = sum(1 for o in open_at if o) * 600
    assert alerted <= 1.5 * HOUR, f"{alerted} s of 3 h after the step under an alert"


def test_a_broken_relation_is_never_absorbed(model: TrainedModel) -> None:
    rng = np.random.default_rng(6)
    data = plant(5 * HOUR, rng)
    data[HOUR:, 1] += 0.8  # b alone: the relation b = 2a is broken, for four hours
    monitor = Monitor.from_settings(model, load_settings(env={}))
    events, _notices, open_at = replay(monitor, data)
    assert not any(e.reason == "rebaselined" for e in events)
    assert open_at[-1] == 1, "the fault must still be alerted at its end"


def test_an_operator_can_refuse_rebaselining(model: TrainedModel) -> None:
    rng = np.random.default_rng(5)
    data = plant(3 * HOUR, rng)
    data[HOUR:] += np.array([1.5, 3.0, -1.5])
    refused = load_settings(env={}, sets=['rebaseline.refuse_assets=["p1"]'])
    _events, notices, open_at = replay(Monitor.from_settings(model, refused), data)
    assert not notices and open_at[-1] == 1


def test_the_baseline_survives_a_restart(model: TrainedModel) -> None:
    rng = np.random.default_rng(5)
    data = plant(4 * HOUR, rng)
    data[HOUR:] += np.array([1.5, 3.0, -1.5])
    first = Monitor.from_settings(model, load_settings(env={}))
    replay(first, data[: 3 * HOUR])
    second = Monitor.from_settings(model, load_settings(env={}))
    snap = first.snapshot_asset("p1")
    assert snap is not None and snap["baseline"] is not None
    second.restore_asset("p1", snap)
    _, _, open_after = replay(second, data[3 * HOUR :])
    assert open_after[-1] == 0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=3, max_size=3))
def test_watch_snapshot_round_trips(offset: list[float]) -> None:
    watch = BaselineWatch(3)
    watch.offset = np.asarray(offset)
    again = BaselineWatch.restore(watch.snapshot(), 3)
    assert again.offset.tolist() == watch.offset.tolist()
    assert RebaselineConfig().enabled
