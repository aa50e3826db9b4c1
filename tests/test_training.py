"""train_model: segments, excluded rows, missing values, calibration, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.artifact import TrainedModel
from models.protocol import Normalizer
from models.training import (
    MAX_CALIBRATION_WINDOWS,
    MIN_CALIBRATION_WINDOWS,
    train_model,
    window_starts,
    windows_from_segments,
)

torch.set_num_threads(1)

SIGNALS = ["temp", "pressure", "flow"]
WINDOW = 10


def history(n_rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n_rows)
    a = np.sin(2 * np.pi * t / 40.0)
    clean = np.stack([70 + 2 * a, 3 + 0.5 * a, 10 - a], axis=1)
    return clean + 0.05 * rng.normal(size=clean.shape) * [2, 0.5, 1]


# --- windows_from_segments -------------------------------------------------------------


def test_windows_never_cross_segments() -> None:
    rows = np.arange(40, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    segments = [(0, 12), (12, 15), (20, 40)]  # the middle one is shorter than the window
    windows = windows_from_segments(rows, segments, window=5)
    assert windows.shape == ((12 - 4) + 0 + (20 - 4), 5, 2)
    firsts = windows[:, 0, 0].astype(int)
    assert np.array_equal(np.diff(windows[:, :, 0], axis=1), np.ones((len(windows), 4)))
    for first in firsts:
        last = first + 4
        assert any(start <= first and last < end for start, end in segments)
    assert np.array_equal(firsts, window_starts(segments, 5))


def test_windows_stride_and_empty() -> None:
    rows = np.arange(20, dtype=np.float32).reshape(10, 2)
    strided = windows_from_segments(rows, [(0, 10)], window=3, stride=3)
    assert strided[:, 0, 0].tolist() == [0.0, 6.0, 12.0]
    assert windows_from_segments(rows, [(0, 2)], window=3).shape == (0, 3, 2)
    with pytest.raises(ValueError, match="not a non-empty row range"):
        windows_from_segments(rows, [(5, 11)], window=3)


# --- train_model --------------------------------------------------------------------------


def test_segments_excluded_rows_and_calibration() -> None:
    values = np.concatenate([history(600, seed=1), history(500, seed=2)])
    segments = [(0, 600), (600, 1100)]
    exclude = np.zeros(1100, dtype=bool)
    exclude[200:230] = True  # a labelled fault in asset 1's training part
    exclude[1050:1060] = True  # and one in asset 2's validation part
    values[exclude] = 1e6  # would wreck the normaliser and the scores if used
    model = train_model(values, SIGNALS, segments=segments, exclude=exclude, window=WINDOW, seed=0)

    # Training rows: first 80 % of each segment, minus excluded rows.
    train_rows = np.concatenate([values[0:200], values[230:480], values[600:1000]])
    expected = Normalizer.fit(train_rows)
    np.testing.assert_allclose(model.normalizer.mean, expected.mean, rtol=1e-6)
    np.testing.assert_allclose(model.normalizer.scale, expected.scale, rtol=1e-6)

    training = model.metadata["training"]
    runs = [200, 250, 400]
    assert training["train_windows"] == sum(n - WINDOW + 1 for n in runs)
    val_runs = [120, 50, 40]  # 480:600, 1000:1050, 1060:1100
    assert training["validation_windows"] == sum(n - WINDOW + 1 for n in val_runs)
    data = model.metadata["data"]
    assert data["rows"] == 1100 and data["segments"] == 2
    assert data["train"]["excluded_rows"] == 30
    assert data["validation"]["excluded_rows"] == 10

    # Calibration = the scorer's scores of exactly the training windows, then the validation
    # ones: fewer validation windows than a tail needs, and PCA's own training scores are
    # unbiased, so both calibrate.
    calib = model.metadata["calibration"]
    assert calib["source"] == "training+validation"
    rows = model.normalizer.transform(np.nan_to_num(values))
    train = windows_from_segments(rows, [(0, 200), (230, 480), (600, 1000)], WINDOW)
    val = windows_from_segments(rows, [(480, 600), (1000, 1050), (1060, 1100)], WINDOW)
    expected = np.concatenate([model.scorer.score_batch(w)[0] for w in (train, val)])
    np.testing.assert_array_equal(model.calibration_scores, expected)
    # No window touched an excluded row: all calibration scores look normal.
    assert model.calibration_scores.max() < 50 * np.median(model.calibration_scores)


def test_missing_values_are_filled_or_dropped() -> None:
    values = history(400)
    values[:5, 1] = np.nan  # before the first pressure reading: rows dropped
    values[100:103, 0] = np.nan  # a short dropout: carried forward
    values[150, 2] = np.inf  # non-finite counts as missing
    model = train_model(values, SIGNALS, window=WINDOW, validation_fraction=0.25)
    train = model.metadata["data"]["train"]
    assert train["dropped_rows"] == 5
    assert train["filled_values"] == 4
    assert train["used_rows"] == 300 - 5
    assert np.isfinite(model.normalizer.mean).all()


def test_validation_thinner_than_a_tail_is_pooled_only_for_unbiased_scorers() -> None:
    values = history(1500)
    pca = train_model(values, SIGNALS, window=WINDOW, validation_fraction=0.2)
    assert pca.metadata["calibration"]["source"] == "training+validation"
    assert "fewer than a tail needs" in pca.metadata["calibration"]["note"]
    training = pca.metadata["training"]
    assert pca.calibration_scores.size == training["train_windows"] + training["validation_windows"]
    # A deep model scores its own training windows low: those never calibrate it.
    deep = train_model(
        values, SIGNALS, scorer="lstm-forecaster", window=WINDOW, validation_fraction=0.2,
        epochs=1,
    )  # fmt: skip
    assert deep.metadata["calibration"]["source"] == "validation"
    # Plenty of validation windows: held-out scores alone, for PCA too.
    long = train_model(history(4000), SIGNALS, window=WINDOW, validation_fraction=0.2)
    assert long.metadata["calibration"]["source"] == "validation"


def many_signals(n_rows: int, seed: int) -> np.ndarray:
    """40 signals: 3 shared factors and each signal's own noise (a process unit's shape)."""
    rng = np.random.default_rng(seed)
    loadings = np.random.default_rng(99).normal(size=(3, 40))
    return rng.normal(size=(n_rows, 3)) @ loadings + 0.5 * rng.normal(size=(n_rows, 40))


def test_a_history_too_short_for_its_signals_calibrates_on_a_cross_fit() -> None:
    # 240 training readings of 40 signals: a covariance scores its own readings low, so
    # training scores would put the threshold under what new normal data scores.
    names = [f"s{j}" for j in range(40)]
    model = train_model(many_signals(300, seed=0), names, window=WINDOW)
    calib = model.metadata["calibration"]
    assert calib["source"] == "cross-fit+validation"
    assert "fitted without the part it scored" in calib["note"]
    assert calib["windows"] == model.calibration_scores.size
    fresh = model.normalizer.transform(many_signals(2000, seed=1))
    new_scores = model.scorer.score_batch(windows_from_segments(fresh, [(0, 2000)], WINDOW))[0]
    # New normal windows pass the 99th percentile of the training windows' own scores
    # several times as often as 1 %; the cross-fit's 99th percentile holds.
    in_sample_p99 = model.metadata["training"]["train_score"]["p99"]
    assert float(np.mean(new_scores > in_sample_p99)) > 0.04
    assert float(np.mean(new_scores > np.quantile(model.calibration_scores, 0.99))) < 0.02
    # The same signals with enough history are scored in-sample, as before.
    long = train_model(many_signals(1200, seed=0), names, window=WINDOW)
    assert long.metadata["calibration"]["source"] == "training+validation"


def test_a_history_too_short_for_five_parts_cross_fits_in_fewer() -> None:
    # 36 training readings of 40 signals, window 10: five parts would hold no window, and
    # training's own scores (a covariance of fewer readings than signals) lie far under
    # what new normal data scores: every window of a test day would be over the threshold.
    names = [f"s{j}" for j in range(40)]
    model = train_model(many_signals(45, seed=0), names, window=WINDOW)
    calib = model.metadata["calibration"]
    assert calib["source"] == "cross-fit+validation"
    assert "scored by 3 models" in calib["note"]
    fresh = model.normalizer.transform(many_signals(2000, seed=1))
    new_scores = model.scorer.score_batch(windows_from_segments(fresh, [(0, 2000)], WINDOW))[0]
    in_sample_p99 = model.metadata["training"]["train_score"]["p99"]
    assert float(np.mean(new_scores > in_sample_p99)) > 0.5
    # Nine held-out scores: their top is passed now and then, not by most windows.
    assert float(np.mean(new_scores > np.quantile(model.calibration_scores, 0.99))) < 0.1


def test_small_validation_falls_back_to_training_scores() -> None:
    values = history(300)
    model = train_model(
        values, SIGNALS, scorer="lstm-forecaster", window=WINDOW, validation_fraction=0.1,
        epochs=1,
    )  # fmt: skip
    calib = model.metadata["calibration"]
    assert model.metadata["training"]["validation_windows"] < MIN_CALIBRATION_WINDOWS
    assert calib["source"] == "training"
    assert "validation windows" in calib["note"]
    assert model.calibration_scores.size == model.metadata["training"]["train_windows"]


def test_calibration_is_capped() -> None:
    values = history(MAX_CALIBRATION_WINDOWS + 3000)
    model = train_model(values, SIGNALS, window=4, validation_fraction=0.9)
    assert model.metadata["calibration"]["windows"] > MAX_CALIBRATION_WINDOWS
    assert model.calibration_scores.size == MAX_CALIBRATION_WINDOWS


def test_trained_model_round_trips_and_is_deterministic(tmp_path: Path) -> None:
    values = history(500)
    first = train_model(values, SIGNALS, scorer="river-hst", window=WINDOW, seed=3, n_trees=5)
    second = train_model(values, SIGNALS, scorer="river-hst", window=WINDOW, seed=3, n_trees=5)
    assert first.version == second.version
    loaded = TrainedModel.load(first.save(tmp_path / "hst"))
    np.testing.assert_array_equal(loaded.calibration_scores, first.calibration_scores)
    assert loaded.metadata["training"]["hyper"] == {"n_trees": 5}


def test_progress_reaches_the_deep_scorer() -> None:
    events: list[dict[str, Any]] = []
    train_model(
        history(300),
        SIGNALS,
        scorer="lstm-forecaster",
        window=8,
        progress=events.append,
        hidden=4,
        epochs=2,
        device="cpu",
    )
    stages = [e.get("stage") for e in events]
    assert stages[0] == "prepared" and stages[-1] == "calibrated"
    epochs = [e for e in events if "epoch" in e]
    assert [e["epoch"] for e in epochs] == [1.0, 2.0]
    assert all("loss" in e and "val_loss" in e for e in epochs)


def test_progress_with_a_scorer_that_takes_none() -> None:
    events: list[dict[str, Any]] = []
    train_model(history(200), SIGNALS, window=WINDOW, progress=events.append)
    assert [e["stage"] for e in events] == ["prepared", "calibrated"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": np.zeros((0, 3))}, "no rows"),
        ({"values": history(11)}, "too few usable rows for window=10"),
        ({"values": history(100), "signals": ["a", "b"]}, "3 columns but 2 signal names"),
        ({"values": history(100), "window": 0}, "window must be"),
        ({"values": history(100), "validation_fraction": 1.0}, "validation_fraction"),
        ({"values": history(100), "segments": [(0, 60), (50, 100)]}, "overlap"),
        ({"values": history(100), "exclude": np.zeros(99, bool)}, "one entry per row"),
        ({"values": history(100), "scorer": "magic"}, "valid scorers are"),
    ],
    ids=["empty", "too-few", "signals", "window", "validation", "overlap", "exclude", "scorer"],
)
def test_clear_errors(kwargs: dict[str, Any], message: str) -> None:
    args = {"signals": SIGNALS, "window": WINDOW, **kwargs}
    values = args.pop("values")
    signals = args.pop("signals")
    with pytest.raises(ValueError, match=message):
        train_model(values, signals, **args)


def test_a_signal_without_values_is_named() -> None:
    values = history(200)
    values[:, 2] = np.nan
    with pytest.raises(ValueError, match=r"no value at all: \['flow'\]"):
        train_model(values, SIGNALS, window=WINDOW)


def test_all_rows_excluded() -> None:
    with pytest.raises(ValueError, match="excluded 160"):
        train_model(history(200), SIGNALS, window=WINDOW, exclude=np.ones(200, bool))
