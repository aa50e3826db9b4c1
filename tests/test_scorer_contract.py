"""Every registered scorer through the same checks (River's ``test_estimators`` habit).

Each scorer is fitted once per module on synthetic normal data (tiny hyper-parameters for
the deep ones, so they train in seconds on one CPU thread) and then judged on: output
shapes and ranges, separation of a clearly abnormal window, attribution to the perturbed
signal, save/load through :class:`TrainedModel`, determinism, batching, bounded memory.

Online learning is an optional capability (:class:`models.protocol.OnlineLearning`): every
scorer that has it goes through the online checks (copy by export and import gives equal
scores, ``fine_tune`` changes the weights and keeps their shapes, ``window_errors`` and
``pooled_error`` are well formed); every scorer without it must be listed in
:data:`OFFLINE_ONLY` with the reason, so a scorer that loses the capability by accident (a
renamed method) fails here instead of quietly dropping out, and the online checks report
the listed ones as skipped, with their reason.
Baseline-specific checks (River exactness, constant signals) follow at the end.
"""

from __future__ import annotations

import gc
import json
import math
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.artifact import TrainedModel
from models.baseline import HalfSpaceTreesScorer, PCAScorer
from models.online import OnlineConfig, OnlineLearner
from models.protocol import Normalizer, OnlineLearning, OnlineScorer, Scorer
from models.registry import SCORERS, create_scorer, online_scorers, scorer_from_state

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
# Registered scorers that leave out the online-learning capability, and why.
OFFLINE_ONLY: dict[str, str] = {
    "river-hst": "its mass-ratio score is normalised by each model's own training data, "
    "so two models cannot be compared on held-out windows",
}


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


# --- the online-learning capability ------------------------------------------------------


def online_or_skip(fitted: Fitted) -> OnlineScorer:
    """The fitted scorer as an OnlineScorer; a listed offline-only one is skipped, reason shown."""
    scorer = fitted.scorer
    if fitted.name in OFFLINE_ONLY:
        assert not isinstance(scorer, OnlineLearning), f"{fitted.name} learns online now"
        pytest.skip(f"{fitted.name} does not learn online: {OFFLINE_ONLY[fitted.name]}")
    assert isinstance(scorer, OnlineScorer), (
        f"{fitted.name} lacks the OnlineLearning capability (copy, fine_tune, window_errors, "
        "pooled_error); implement it or list the scorer in OFFLINE_ONLY with the reason"
    )
    return scorer


def shifted_normal(fitted: Fitted) -> np.ndarray:
    """Normal windows after a set-point change: half a standard deviation on every signal."""
    return (fitted.normal + np.float32(0.5)).astype(np.float32)


def test_online_capability_is_declared(fitted: Fitted) -> None:
    capable = isinstance(fitted.scorer, OnlineLearning)
    assert capable != (fitted.name in OFFLINE_ONLY), (
        f"{fitted.name}: online-capable={capable}, but OFFLINE_ONLY says the opposite"
    )
    assert capable == issubclass(SCORERS[fitted.name], OnlineLearning)
    assert (fitted.name in online_scorers()) == capable


def test_the_learner_takes_exactly_the_online_scorers(fitted: Fitted) -> None:
    model = TrainedModel.create(fitted.scorer, SIGNALS, fitted.normalizer, np.ones(10, np.float32))
    OnlineLearner(model, OnlineConfig(enabled=False))  # off: any scorer serves
    if fitted.name not in OFFLINE_ONLY:
        OnlineLearner(model, OnlineConfig(enabled=True))
        return
    with pytest.raises(ValueError, match=rf"{fitted.name}.*does not learn online") as caught:
        OnlineLearner(model, OnlineConfig(enabled=True))
    for name in online_scorers():
        assert name in str(caught.value)


def test_copy_by_export_and_import_gives_equal_scores(fitted: Fitted) -> None:
    scorer = online_or_skip(fitted)
    copy = scorer.copy()
    assert copy is not scorer
    assert type(copy) is type(scorer)
    assert copy.get_config() == scorer.get_config()
    windows = np.concatenate([fitted.normal, fitted.abnormal])
    before, after = scorer.score_batch(windows), copy.score_batch(windows)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])


def test_fine_tune_changes_weights_keeps_shapes_and_leaves_the_original(fitted: Fitted) -> None:
    scorer = online_or_skip(fitted)
    original = {k: v.copy() for k, v in scorer.state_tensors().items()}
    probe = fitted.normal[:50]
    scores_before = scorer.score_batch(probe)[0]
    copy = scorer.copy()
    metrics = copy.fine_tune(shifted_normal(fitted), epochs=1, lr_scale=0.5, seed=0)
    json.dumps(metrics, allow_nan=False)
    tuned = copy.state_tensors()
    assert tuned.keys() == original.keys()
    for key, value in tuned.items():
        assert value.shape == original[key].shape, key
        assert value.dtype == original[key].dtype, key
    changed = [k for k in tuned if not np.array_equal(tuned[k], original[k])]
    assert changed, "fine_tune left every tensor as it was"
    # The copy took the change; the scorer it was copied from did not.
    for key, value in scorer.state_tensors().items():
        np.testing.assert_array_equal(value, original[key], err_msg=key)
    np.testing.assert_array_equal(scorer.score_batch(probe)[0], scores_before)
    rebuilt = scorer_from_state(copy.get_config(), tuned)
    np.testing.assert_allclose(
        rebuilt.score_batch(probe)[0], copy.score_batch(probe)[0], rtol=1e-6, atol=1e-7
    )


def test_fine_tune_is_deterministic_for_a_seed(fitted: Fitted) -> None:
    scorer = online_or_skip(fitted)
    states = []
    for _ in range(2):
        copy = scorer.copy()
        copy.fine_tune(shifted_normal(fitted), epochs=1, lr_scale=0.5, seed=3)
        states.append(copy.state_tensors())
    for key in states[0]:
        np.testing.assert_array_equal(states[0][key], states[1][key], err_msg=key)


def test_window_errors_and_pooled_error_are_well_formed(fitted: Fitted) -> None:
    scorer = online_or_skip(fitted)
    errors = scorer.window_errors(fitted.normal)
    assert errors.shape == (fitted.normal.shape[0],)
    assert errors.dtype == np.float64
    assert np.isfinite(errors).all()
    pooled = scorer.pooled_error(errors)
    assert isinstance(pooled, float)
    assert math.isfinite(pooled) and pooled > 0
    # Per window: batching does not change it, and abnormal windows are worse on average.
    pieces = np.concatenate([scorer.window_errors(fitted.normal[i : i + 37]) for i in (0, 37)])
    np.testing.assert_allclose(pieces, errors[:74], rtol=1e-5, atol=1e-9)
    assert scorer.pooled_error(scorer.window_errors(fitted.abnormal)) > pooled
    with pytest.raises(ValueError, match="shape"):
        scorer.window_errors(np.zeros((2, WINDOW, N_SIGNALS + 1), dtype=np.float32))


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


def _many_signal_plant(rows: int, seed: int) -> np.ndarray:
    """40 signals driven by 5 slow shared factors plus their own noise."""
    rng = np.random.default_rng(seed)
    factors = np.zeros((rows, 5))
    for i in range(1, rows):
        factors[i] = 0.95 * factors[i - 1] + rng.normal(scale=0.3, size=5)
    loadings = np.random.default_rng(99).normal(size=(5, 40))
    return (factors @ loadings + 0.3 * rng.normal(size=(rows, 40))).astype(np.float32)


def test_pca_judges_one_signal_among_many_on_its_own() -> None:
    """A bias on one signal of 40 is a small share of the combined T²+Q index, but far out
    against that signal's own training level: the separate statistics see it."""
    train = _many_signal_plant(4000, seed=1)
    test = _many_signal_plant(3000, seed=2)
    mu, sd = train.mean(axis=0), train.std(axis=0)
    train, test = (train - mu) / sd, (test - mu) / sd
    windows = np.lib.stride_tricks.sliding_window_view(test, 16, axis=0).transpose(0, 2, 1)
    faulty = windows[::16][:100].copy()
    faulty[:, -4:, 7] += 1.2  # four times that signal's own noise, on the newest readings

    def margin(scorer: PCAScorer) -> float:
        scorer.fit([train])
        normal = scorer.score_batch(np.ascontiguousarray(windows))[0]
        return float(np.median(scorer.score_batch(faulty)[0]) / np.quantile(normal, 0.999))

    separate, combined = margin(PCAScorer(40, 16)), margin(PCAScorer(40, 16, separate=False))
    # Below their own 99th percentile the separate statistics say nothing: most normal
    # windows score exactly the combined index, none lower.
    both, alone = PCAScorer(40, 16), PCAScorer(40, 16, separate=False)
    both.fit([train])
    alone.fit([train])
    normal = np.ascontiguousarray(windows[::7])
    with_separate, combined_only = both.score_batch(normal)[0], alone.score_batch(normal)[0]
    assert (with_separate >= combined_only).all()
    assert np.mean(with_separate == combined_only) > 0.9
    assert separate > 1.5, separate
    assert combined < 1.0, combined
    # A model saved before the separate statistics existed still loads and scores alone.
    old = PCAScorer(40, 16, separate=False)
    old.fit([train])
    config = old.get_config()
    del config["separate"]
    again = PCAScorer.from_state(config, old.state_tensors())
    assert not again.separate
    np.testing.assert_array_equal(again.score_batch(faulty)[0], old.score_batch(faulty)[0])


def test_pca_separate_statistics_round_trip_and_refuse_bad_scales() -> None:
    # By default only with many signals (few dilute little), never with one.
    assert PCAScorer(40, WINDOW).separate and not PCAScorer(N_SIGNALS, WINDOW).separate
    assert not PCAScorer(1, WINDOW, separate=True).separate
    pca = PCAScorer(N_SIGNALS, WINDOW, separate=True)
    rows = Normalizer.fit(raw := plant_readings(1000, seed=5)).transform(raw)
    pca.fit([rows])
    windows = as_windows(rows)[:40]
    again = PCAScorer.from_state(pca.get_config(), pca.state_tensors())
    np.testing.assert_array_equal(again.score_batch(windows)[0], pca.score_batch(windows)[0])
    tensors = pca.state_tensors()
    tensors["statistic_scales"][0] = 0.0
    with pytest.raises(ValueError, match="statistic scales"):
        PCAScorer.from_state(pca.get_config(), tensors)


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
