"""The LSTM forecaster served as a stream (``model.stream``): one LSTM step per window.

The monitor hands the stream its ready windows; the carried state must give the same
scores and alert events however the batches were cut, survive a checkpoint, and start
from the window scorer's own score wherever a window does not continue the last.
"""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from models.artifact import TrainedModel
from models.training import train_model
from plantwatch.monitor import Monitor
from plantwatch.settings import load_settings
from tests.test_batch_cuts import SIGNALS, T0, run, stream
from tests.test_pipeline import plant


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    return train_model(
        plant(8_000, np.random.default_rng(3)),
        SIGNALS,
        window=16,
        scorer="lstm-forecaster",
        hidden=16,
        epochs=3,
        device="cpu",
    )


def monitor(model: TrainedModel, *, on: bool = True) -> Monitor:
    return Monitor.from_settings(
        model, load_settings(env={}, sets=[f"model.stream={str(on).lower()}"])
    )


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**16), cuts=st.lists(st.integers(1, 1799), min_size=1, max_size=12))
def test_batch_cuts_change_nothing_with_the_stream(
    model: TrainedModel, seed: int, cuts: list[int]
) -> None:
    readings = stream(seed)
    whole = run(model, readings, [0, len(readings)])
    assert monitor(model)._stream is not None  # run() serves the default: the stream
    # Not trivial: the model's own alerts open (the stream's scores decide them).
    assume(any(e.event == "opened" and e.kind == "anomaly" for e in whole[1]))
    cut = run(model, readings, [0, *sorted(set(cuts)), len(readings)])
    assert cut[0] == whole[0]
    assert cut[1] == whole[1]


def test_the_stream_scores_like_the_window_scorer_at_a_fraction_of_the_steps(
    model: TrainedModel,
) -> None:
    readings = stream(5)
    streamed, windowed = monitor(model), monitor(model, on=False)
    assert windowed._stream is None
    out = streamed.process(readings, now_ms=T0)
    assert any(e.event == "opened" and e.kind == "anomaly" for e in out.events)
    a = out.scored
    b = windowed.process(readings, now_ms=T0).scored
    assert a.assets == b.assets and (a.ts_ms == b.ts_ms).all()
    # Each asset's first window is primed from its own rows: the window scorer's score.
    first = [a.assets.index(asset) for asset in ("p1", "p2")]
    np.testing.assert_allclose(a.scores[first], b.scores[first], rtol=1e-5)
    ratio = a.scores / b.scores
    assert 0.8 < np.median(ratio) < 1.25
    assert np.corrcoef(np.log(a.scores), np.log(b.scores))[0, 1] > 0.9
    assert not np.allclose(a.scores, b.scores, rtol=1e-5)  # carried, not re-run


def test_a_checkpoint_carries_the_stream_state(model: TrainedModel) -> None:
    readings = stream(9)
    half = len(readings) // 2
    kept = monitor(model)
    kept.process(readings[:half], now_ms=T0)
    snaps = {
        a: msgspec.json.decode(msgspec.json.encode(kept.snapshot_asset(a))) for a in ("p1", "p2")
    }
    assert all(s["stream"] is not None for s in snaps.values())
    restored, primed = monitor(model), monitor(model)
    for asset, snap in snaps.items():
        assert restored.restore_asset(asset, snap) is None
        assert primed.restore_asset(asset, {**snap, "stream": None}) is None
    want = kept.process(readings[half:], now_ms=T0).scored.scores
    np.testing.assert_array_equal(restored.process(readings[half:], now_ms=T0).scored.scores, want)
    # Without the carried state the next window is primed from its rows: close, not equal.
    got = primed.process(readings[half:], now_ms=T0).scored.scores
    assert not np.array_equal(got, want)
    np.testing.assert_allclose(got[-50:], want[-50:], rtol=1e-3)  # the state converges
    # A stream state that does not fit the model is left out, said, and primed instead.
    bad = {**snaps["p1"], "stream": {**snaps["p1"]["stream"], "h": [[0.0]]}}
    said = monitor(model).restore_asset("p1", bad)
    assert said is not None and "primed from the next window" in said
