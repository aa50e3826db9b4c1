"""Every registered scorer through the same checks (River's ``test_estimators`` habit).

Each scorer is fitted once per module on synthetic normal data (tiny hyper-parameters for
the deep ones, so they train in seconds on one CPU thread) and then judged on: output
shapes and ranges, separation of a clearly abnormal window, attribution to the perturbed
signal, save/load through :class:`TrainedModel`, determinism, batching, bounded memory.
Baseline-specific checks (River exactness, constant signals) follow at the end.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.artifact import TrainedModel
from models.baseline import HalfSpaceTreesScorer, PCAScorer
from models.protocol import Normalizer, Scorer
from models.registry import SCORERS, create_scorer, scorer_from_state

torch.set_num_threads(1)

WINDOW = 16
N_SIGNALS = 4
SIGNALS = ("temp", "pressure", "flow", "current")
# Small enough to train in a few seconds each; unknown (newly registered) scorers run
# with their defaults, so they are still checked.
TINY: dict[str, dict[str, Any]] = {
    "lstm-ae": {"hidden": 8, "latent": 4, "epochs": 3, "batch_size": 64, "device": "cpu"},
    "lstm-forecaster": {"hidden": 8, "epochs": 3, "batch_size": 64, "device": "cpu"},
    "conv-ae": {"channels": (8, 4), "kernel": 3, "epochs": 3, "batch_size": 64, "device": "cpu"},
    "river-hst": {"max_samples": 1024},
}
PERTURBED = (1, 3)


def plant_readings(n_rows: int, seed: int, start: int = 0) -> np.ndarray:
    """Four correlated signals driven by two periodic latent factors plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(start, start + n_rows)
    a = np.sin(2 * np.pi * t / 50.0)
    b = np.cos(2 * np.pi * t / 23.0)
    clean = np.stack([a, 0.8 * a + 0.5 * b, b, -a + 0.3 * b], axis=1)
    return (clean + 0.1 * rng.normal(size=clean.shape)).astype(np.float32)


def as_windows(rows: np.ndarray) -> np.ndarray:
    view = np.lib.stride_tricks.sliding_window_view(rows, WINDOW, axis=0)
    return np.ascontiguousarray(view.transpose(0, 2, 1))


class Fitted:
    """A scorer fitted on normal history, with held-out normal and abnormal windows."""

    def __init__(self, name: str) -> None:
        self.name = name
        raw = plant_readings(2000, seed=1)
        self.normalizer = Normalizer.fit(raw)
        self.history = self.normalizer.transform(raw)
        self.scorer = create_scorer(name, N_SIGNALS, WINDOW, **TINY.get(name, {}))
        self.metrics = self.scorer.fit([self.history[:1200], self.history[1200:]], seed=0)
        held_out = self.normalizer.transform(plant_readings(400, seed=2, start=2000))
        self.normal = as_windows(held_out)
        abnormal = self.normal[::40][: len(PERTURBED)].copy()
        for i, signal in enumerate(PERTURBED):
            abnormal[i, -2:, signal] += 6.0  # six standard deviations, last two readings
        self.abnormal = abnormal


@pytest.fixture(scope="module", params=sorted(SCORERS))
def fitted(request: pytest.FixtureRequest) -> Fitted:
    return Fitted(request.param)


def test_follows_protocol(fitted: Fitted) -> None:
    scorer = fitted.scorer
    assert isinstance(scorer, Scorer)
    assert scorer.name == fitted.name
    assert scorer.window == WINDOW
    config = scorer.get_config()
    assert config["name"] == fitted.name
    assert config["n_signals"] == N_SIGNALS
    json.dumps(config, allow_nan=False)
    json.dumps(fitted.metrics)
    for key, value in scorer.state_tensors().items():
        assert isinstance(value, np.ndarray), key


def test_scores_and_contributions_are_well_formed(fitted: Fitted) -> None:
    scores, contributions = fitted.scorer.score_batch(fitted.normal)
    batch = fitted.normal.shape[0]
    assert scores.shape == (batch,)
    assert contributions.shape == (batch, N_SIGNALS)
    assert np.isfinite(scores).all()
    assert np.isfinite(contributions).all()
    assert (contributions >= 0).all()
    np.testing.assert_allclose(contributions.sum(axis=1), 1.0, atol=1e-5)


def test_empty_batch(fitted: Fitted) -> None:
    scores, contributions = fitted.scorer.score_batch(
        np.zeros((0, WINDOW, N_SIGNALS), dtype=np.float32)
    )
    assert scores.shape == (0,)
    assert contributions.shape == (0, N_SIGNALS)


def test_wrong_window_shape_is_refused(fitted: Fitted) -> None:
    with pytest.raises(ValueError, match="shape"):
        fitted.scorer.score_batch(np.zeros((2, WINDOW, N_SIGNALS + 1), dtype=np.float32))


def test_abnormal_window_scores_above_normal_p99(fitted: Fitted) -> None:
    normal, _ = fitted.scorer.score_batch(fitted.normal)
    abnormal, _ = fitted.scorer.score_batch(fitted.abnormal)
    assert (abnormal > np.quantile(normal, 0.99)).all(), (abnormal, np.quantile(normal, 0.99))


def test_perturbed_signal_contributes_most(fitted: Fitted) -> None:
    _, contributions = fitted.scorer.score_batch(fitted.abnormal)
    assert contributions.argmax(axis=1).tolist() == list(PERTURBED), contributions


def test_save_load_round_trip_gives_equal_scores(fitted: Fitted, tmp_path: Path) -> None:
    calibration, _ = fitted.scorer.score_batch(fitted.normal[:50])
    model = TrainedModel.create(fitted.scorer, SIGNALS, fitted.normalizer, calibration)
    loaded = TrainedModel.load(model.save(tmp_path / "model"))
    assert loaded.version == model.version
    assert loaded.name == fitted.name
    assert type(loaded.scorer) is type(fitted.scorer)
    windows = np.concatenate([fitted.normal, fitted.abnormal])
    before = fitted.scorer.score_batch(windows)
    after = loaded.scorer.score_batch(windows)
    np.testing.assert_allclose(after[0], before[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(after[1], before[1], rtol=1e-6, atol=1e-7)


def test_from_state_directly(fitted: Fitted) -> None:
    rebuilt = scorer_from_state(fitted.scorer.get_config(), fitted.scorer.state_tensors())
    np.testing.assert_allclose(
        rebuilt.score_batch(fitted.normal)[0],
        fitted.scorer.score_batch(fitted.normal)[0],
        rtol=1e-6,
        atol=1e-7,
    )


def test_same_seed_gives_same_model(fitted: Fitted) -> None:
    again = create_scorer(fitted.name, N_SIGNALS, WINDOW, **TINY.get(fitted.name, {}))
    again.fit([fitted.history[:1200], fitted.history[1200:]], seed=0)
    np.testing.assert_array_equal(
        again.score_batch(fitted.normal)[0], fitted.scorer.score_batch(fitted.normal)[0]
    )


def test_batching_does_not_change_scores(fitted: Fitted) -> None:
    windows = fitted.normal[:200]
    whole_scores, whole_contrib = fitted.scorer.score_batch(windows)
    pieces = [fitted.scorer.score_batch(windows[i : i + 37]) for i in range(0, 200, 37)]
    np.testing.assert_allclose(
        np.concatenate([p[0] for p in pieces]), whole_scores, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        np.concatenate([p[1] for p in pieces]), whole_contrib, rtol=1e-5, atol=1e-6
    )


def test_scoring_does_not_grow_state(fitted: Fitted) -> None:
    before = {k: v.copy() for k, v in fitted.scorer.state_tensors().items()}
    batch = fitted.normal[:64]
    for _ in range(5):  # warm up caches and allocator pools
        fitted.scorer.score_batch(batch)
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(10):
            fitted.scorer.score_batch(batch)
        gc.collect()
        early, _ = tracemalloc.get_traced_memory()
        for _ in range(100):
            fitted.scorer.score_batch(batch)
        gc.collect()
        late, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 100 more batches of 64 windows: anything kept per window would be well over this.
    assert late - early < 256 * 1024, late - early
    after = fitted.scorer.state_tensors()
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


# --- baseline specifics ---------------------------------------------------------------


def _fit_hst(**hyper: Any) -> tuple[HalfSpaceTreesScorer, np.ndarray]:
    raw = plant_readings(1500, seed=3)
    rows = Normalizer.fit(raw).transform(raw)
    hst = HalfSpaceTreesScorer(N_SIGNALS, WINDOW, n_trees=8, height=6, max_samples=800, **hyper)
    hst.fit([rows], seed=7)
    windows = as_windows(rows)[::5].copy()
    windows[::7, -1, 2] += np.linspace(-8, 8, windows[::7].shape[0])  # some out of range
    return hst, windows


@pytest.mark.parametrize("window_stats", [False, True])
def test_hst_scores_equal_rivers_own(window_stats: bool) -> None:
    from river import anomaly

    hst, windows = _fit_hst(window_stats=window_stats)
    scores, _ = hst.score_batch(windows)
    rebuilt: Any = hst.to_river()
    features = hst.features(windows)
    river_scores = np.array([rebuilt.score_one(dict(enumerate(f.tolist()))) for f in features])
    assert isinstance(rebuilt, anomaly.HalfSpaceTrees)
    np.testing.assert_array_equal(scores, river_scores.astype(np.float32))


def test_hst_export_matches_the_river_object_it_trained() -> None:
    """The arrays are River's trees: re-training with the same seed and data and scoring
    with River's own object gives the numpy evaluator's scores exactly."""
    from river import anomaly

    hst, windows = _fit_hst()
    raw = plant_readings(1500, seed=3)
    rows = Normalizer.fit(raw).transform(raw).astype(np.float64)
    config = hst.get_config()
    limits = hst.state_tensors()["limits"]
    original: Any = anomaly.HalfSpaceTrees(
        n_trees=8,
        height=6,
        window_size=config["window_size"],
        limits={i: (float(a), float(b)) for i, (a, b) in enumerate(limits)},
        seed=7,
    )
    rng = np.random.default_rng(7)
    all_windows = as_windows(rows)
    chosen = np.sort(rng.choice(all_windows.shape[0], 800, replace=False))
    for f in hst.features(all_windows[chosen].astype(np.float32)):
        original.learn_one(dict(enumerate(f.tolist())))
    features = hst.features(windows)
    river_scores = np.array([original.score_one(dict(enumerate(f.tolist()))) for f in features])
    np.testing.assert_array_equal(hst.score_batch(windows)[0], river_scores.astype(np.float32))


def test_hst_from_state_refuses_bad_trees() -> None:
    hst, _ = _fit_hst()
    tensors = hst.state_tensors()
    tensors["feature"] = tensors["feature"].copy()
    tensors["feature"][0, 0] = N_SIGNALS + 5
    with pytest.raises(ValueError, match="invalid"):
        HalfSpaceTreesScorer.from_state(hst.get_config(), tensors)


def test_pca_constant_signal_is_watched() -> None:
    raw = plant_readings(1000, seed=4)
    raw[:, 2] = 5.0  # a set-point: constant in training
    normalizer = Normalizer.fit(raw)
    rows = normalizer.transform(raw)
    assert np.all(rows[:, 2] == 0.0)
    pca = PCAScorer(N_SIGNALS, WINDOW)
    pca.fit([rows])
    windows = as_windows(rows)[:50].copy()
    normal, _ = pca.score_batch(windows)
    assert np.isfinite(normal).all()
    windows[0, -4:, 2] = 1.0  # the set-point moves
    scores, contributions = pca.score_batch(windows[:1])
    assert scores[0] > 10 * normal.max()
    assert contributions[0].argmax() == 2


def test_pca_all_constant_signals() -> None:
    rows = np.zeros((100, 3), dtype=np.float32)
    pca = PCAScorer(3, 8)
    metrics = pca.fit([rows])
    assert metrics["n_components"] == 0
    windows = np.zeros((2, 8, 3), dtype=np.float32)
    windows[1, -1, 0] = 0.5
    scores, contributions = pca.score_batch(windows)
    assert scores[0] == 0.0 and scores[1] > 0.0
    np.testing.assert_allclose(contributions[0], 1 / 3)
    assert contributions[1].argmax() == 0
    again = PCAScorer.from_state(pca.get_config(), pca.state_tensors())
    np.testing.assert_array_equal(again.score_batch(windows)[0], scores)


def test_baselines_refuse_nan() -> None:
    pca = PCAScorer(2, 4)
    with pytest.raises(ValueError, match="NaN"):
        pca.fit([np.array([[0.0, np.nan], [1.0, 1.0], [2.0, 0.0]], dtype=np.float32)])
    pca.fit([np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)])
    windows = np.zeros((1, 4, 2), dtype=np.float32)
    windows[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pca.score_batch(windows)


def test_unknown_scorer_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"valid scorers are: .*pca"):
        create_scorer("isolation-forest", 3, 8)
    with pytest.raises(ValueError, match="unknown scorer"):
        scorer_from_state({"name": "nope"}, {})
