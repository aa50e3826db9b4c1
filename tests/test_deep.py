"""Contract and behaviour tests for the deep scorers (tiny models, one thread, seconds each)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from models.deep import (
    ConvAutoencoderScorer,
    DeepScorer,
    ForecasterStream,
    InferenceOptions,
    LSTMAutoencoderScorer,
    LSTMForecasterScorer,
    WindowSet,
    scale_errors,
)
from models.protocol import FloatArray, Normalizer, Scorer

WINDOW = 16
N_SIGNALS = 3
SHIFTED = 1  # the signal that the injected fault moves

Factory = Callable[..., DeepScorer]

FACTORIES: dict[str, Factory] = {
    "lstm-ae": lambda **kw: LSTMAutoencoderScorer(
        N_SIGNALS, WINDOW, hidden=16, latent=8, device="cpu", **kw
    ),
    "lstm-forecaster": lambda **kw: LSTMForecasterScorer(
        N_SIGNALS, WINDOW, hidden=16, device="cpu", **kw
    ),
    "conv-ae": lambda **kw: ConvAutoencoderScorer(
        N_SIGNALS, WINDOW, channels=(16, 8), kernel=5, device="cpu", **kw
    ),
}
FIT: dict[str, Any] = {"epochs": 25, "patience": 4, "lr": 5e-3}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def plant(rows: int, *, seed: int, start: int = 0) -> FloatArray:
    """Three correlated periodic signals with a little noise, like a pump's readings."""
    rng = np.random.default_rng(seed)
    t = np.arange(start, start + rows, dtype=np.float64)
    a = np.sin(2 * np.pi * t / 25)
    b = np.cos(2 * np.pi * t / 40)
    c = 0.6 * a + 0.4 * b
    data = np.stack([a, b, c], axis=1) + rng.normal(scale=0.1, size=(rows, 3))
    return data.astype(np.float32)


NORMALIZER = Normalizer.fit(plant(2000, seed=99))


def normal_segments() -> list[FloatArray]:
    # Two segments with a gap between them: windows must never span it.
    return [
        NORMALIZER.transform(plant(300, seed=1)),
        NORMALIZER.transform(plant(300, seed=2, start=1000)),
    ]


def windows_of(rows: FloatArray) -> FloatArray:
    view = np.lib.stride_tricks.sliding_window_view(rows, WINDOW, axis=0)
    return np.ascontiguousarray(view.transpose(0, 2, 1))


def held_out_windows() -> FloatArray:
    return windows_of(NORMALIZER.transform(plant(200, seed=7, start=5000)))


def level_shift(windows: FloatArray, *, steps: int = 8, size: float = 3.0) -> FloatArray:
    shifted = windows.copy()
    shifted[:, -steps:, SHIFTED] += size
    return shifted


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def trained(request: pytest.FixtureRequest) -> tuple[str, DeepScorer, dict[str, Any]]:
    name = str(request.param)
    scorer = FACTORIES[name](**FIT)
    metrics = scorer.fit(normal_segments(), seed=0)
    return name, scorer, metrics


def test_follows_the_scorer_protocol(trained: tuple[str, DeepScorer, dict[str, Any]]) -> None:
    name, scorer, metrics = trained
    assert isinstance(scorer, Scorer)
    assert scorer.name == name
    json.dumps(metrics)
    json.dumps(scorer.get_config())
    assert {"epochs_run", "best_epoch", "loss", "val_loss", "seconds"} <= metrics.keys()
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= FIT["epochs"]


def test_same_seed_gives_the_same_model(trained: tuple[str, DeepScorer, dict[str, Any]]) -> None:
    name, scorer, _ = trained
    again = FACTORIES[name](**FIT)
    again.fit(normal_segments(), seed=0)
    for key, value in scorer.state_tensors().items():
        np.testing.assert_array_equal(value, again.state_tensors()[key], err_msg=key)
    windows = held_out_windows()
    np.testing.assert_array_equal(scorer.score_batch(windows)[0], again.score_batch(windows)[0])
    other = FACTORIES[name](**{**FIT, "epochs": 2})
    other.fit(normal_segments(), seed=1)
    assert not np.array_equal(other.score_batch(windows)[0], scorer.score_batch(windows)[0])


def test_level_shift_scores_high_on_its_signal(
    trained: tuple[str, DeepScorer, dict[str, Any]],
) -> None:
    _, scorer, _ = trained
    windows = held_out_windows()
    normal_scores, normal_contributions = scorer.score_batch(windows)
    normal_p99 = np.quantile(normal_scores, 0.99)
    # At onset (the newest reading shifted), where an alert opens in streaming use.
    onset_scores, onset_contributions = scorer.score_batch(level_shift(windows, steps=1))
    assert np.median(onset_scores) > 3 * normal_p99
    assert (onset_scores > normal_p99).mean() > 0.95
    assert (onset_contributions.argmax(axis=1) == SHIFTED).mean() > 0.95
    # Eight readings into the fault the models see shifted input, and part of the error
    # spreads to the correlated signals; the shifted one still explains the most.
    later_scores, later_contributions = scorer.score_batch(level_shift(windows, steps=8))
    assert np.median(later_scores) > 1.5 * normal_p99
    assert (later_scores > normal_p99).mean() > 0.9
    assert later_contributions.mean(axis=0).argmax() == SHIFTED
    for contributions in (normal_contributions, onset_contributions, later_contributions):
        assert (contributions >= 0).all()
        np.testing.assert_allclose(contributions.sum(axis=1), 1.0, rtol=1e-5)


def test_noisy_signal_does_not_dominate_contributions(
    trained: tuple[str, DeepScorer, dict[str, Any]],
) -> None:
    name, _, _ = trained
    rng = np.random.default_rng(3)
    segments = normal_segments()
    # Signal 0 becomes unpredictable noise, three times the spread of the others.
    for segment in segments:
        segment[:, 0] = rng.normal(scale=3.0, size=segment.shape[0])
    scorer = FACTORIES[name](**{**FIT, "epochs": 10})
    scorer.fit(segments, seed=0)
    windows = windows_of(segments[1])
    errors = scorer.signal_errors(windows)
    _, contributions = scorer.score_batch(windows)
    # Raw errors are dominated by the noisy signal; scaled contributions are not.
    assert errors[:, 0].mean() / errors.sum(axis=1).mean() > 0.6
    assert contributions[:, 0].mean() < 0.5


def test_early_stopping_stops_and_keeps_the_best_epoch() -> None:
    seen: list[dict[str, float]] = []
    # A large learning rate makes validation loss stop improving quickly.
    scorer = FACTORIES["conv-ae"](epochs=200, patience=2, lr=0.05)
    metrics = scorer.fit(normal_segments(), seed=0, progress=seen.append)
    assert metrics["stopped_early"] is True
    assert metrics["epochs_run"] < 200
    assert metrics["epochs_run"] == metrics["best_epoch"] + 2
    assert [int(p["epoch"]) for p in seen] == list(range(1, metrics["epochs_run"] + 1))
    assert all({"epoch", "loss", "val_loss"} <= p.keys() for p in seen)
    assert metrics["best_val_loss"] == min(p["val_loss"] for p in seen)


def test_state_round_trip_gives_identical_scores(
    trained: tuple[str, DeepScorer, dict[str, Any]],
) -> None:
    _, scorer, _ = trained
    config = json.loads(json.dumps(scorer.get_config()))
    rebuilt = type(scorer).from_state(config, scorer.state_tensors(), device="cpu")
    assert rebuilt.get_config() == scorer.get_config()
    windows = held_out_windows()
    for mine, theirs in zip(scorer.score_batch(windows), rebuilt.score_batch(windows), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_from_state_names_what_does_not_match(
    trained: tuple[str, DeepScorer, dict[str, Any]],
) -> None:
    _, scorer, _ = trained
    config = scorer.get_config()
    tensors = scorer.state_tensors()
    cls = type(scorer)
    missing = dict(tensors)
    del missing["error_scale"]
    with pytest.raises(ValueError, match="missing \\['error_scale'\\]"):
        cls.from_state(config, missing)
    with pytest.raises(ValueError, match="unexpected \\['extra'\\]"):
        cls.from_state(config, {**tensors, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match="wrong shapes"):
        cls.from_state({**config, "n_signals": N_SIGNALS + 1}, tensors)
    with pytest.raises(ValueError, match="not"):
        cls.from_state({**config, "name": "another"}, tensors)
    with pytest.raises(ValueError, match="does not fit"):
        cls.from_state({**config, "no_such_option": 1}, tensors)


def test_scores_do_not_depend_on_the_batch(
    trained: tuple[str, DeepScorer, dict[str, Any]],
) -> None:
    _, scorer, _ = trained
    windows = level_shift(held_out_windows())[:40]
    whole, whole_c = scorer.score_batch(windows)
    one_by_one = np.concatenate([scorer.score_batch(w[None])[0] for w in windows])
    np.testing.assert_allclose(one_by_one, whole, rtol=1e-5, atol=1e-6)
    chunked = type(scorer).from_state(
        scorer.get_config(), scorer.state_tensors(), inference=InferenceOptions(score_chunk=7)
    )
    chunk_scores, chunk_c = chunked.score_batch(windows)
    np.testing.assert_allclose(chunk_scores, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chunk_c, whole_c, rtol=1e-5, atol=1e-6)
    empty_scores, empty_c = scorer.score_batch(np.zeros((0, WINDOW, N_SIGNALS), np.float32))
    assert empty_scores.shape == (0,) and empty_c.shape == (0, N_SIGNALS)


def test_bf16_option_changes_scores_only_slightly(
    trained: tuple[str, DeepScorer, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    _, scorer, _ = trained
    windows = level_shift(held_out_windows(), steps=1)
    bf16 = type(scorer).from_state(
        scorer.get_config(),
        scorer.state_tensors(),
        inference=InferenceOptions(bf16_min_batch=32),
    )
    exact, _ = scorer.score_batch(windows)
    rounded, contributions = bf16.score_batch(windows)
    if bf16.bf16_unavailable is not None:
        # This platform has no bf16 kernel for the model (oneDNN's LSTM on a CPU without
        # native bf16): said once, and the scores are fp32's exactly.
        np.testing.assert_array_equal(rounded, exact)
        assert "bf16 inference is not available" in caplog.text
        caplog.clear()
        assert bf16.score_batch(windows)[0].tolist() == exact.tolist()
        assert "bf16" not in caplog.text  # said once
    else:
        assert not np.array_equal(rounded, exact)  # bf16 really ran
    np.testing.assert_allclose(rounded, exact, rtol=0.1)
    np.testing.assert_allclose(contributions.sum(axis=1), 1.0, rtol=1e-5)
    # Below the size limit the chunk stays in fp32.
    np.testing.assert_allclose(bf16.score_batch(windows[:31])[0], exact[:31], rtol=1e-5)


def test_bad_input_is_refused_with_a_reason() -> None:
    scorer = FACTORIES["lstm-ae"]()
    with pytest.raises(ValueError, match=f"\\(batch, {WINDOW}, {N_SIGNALS}\\)"):
        scorer.score_batch(np.zeros((2, WINDOW + 1, N_SIGNALS), np.float32))
    bad = np.zeros((1, WINDOW, N_SIGNALS), np.float32)
    bad[0, 3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        scorer.score_batch(bad)
    with pytest.raises(ValueError, match="at least window"):
        scorer.fit([np.zeros((WINDOW - 1, N_SIGNALS), np.float32)])
    with pytest.raises(ValueError, match="expected \\(rows, 3\\)"):
        scorer.fit([np.zeros((50, 2), np.float32)])
    with pytest.raises(ValueError, match="multiple of 4"):
        ConvAutoencoderScorer(N_SIGNALS, window=18)


def test_training_windows_never_span_two_segments() -> None:
    first = np.zeros((20, N_SIGNALS), np.float32)
    second = np.ones((10, N_SIGNALS), np.float32)
    too_short = np.full((WINDOW // 2 - 1, N_SIGNALS), 2.0, np.float32)
    windows = WindowSet.from_segments([first, too_short, second], 8, N_SIGNALS, stride=2)
    assert len(windows) == 7 + 2  # starts 0, 2, .., 12 in the first; 0, 2 in the second
    batch = windows.gather(torch.arange(len(windows))).numpy()
    # Every window holds readings of one segment only.
    assert all(np.unique(w).size == 1 for w in batch)
    assert batch[:7].max() == 0.0 and batch[7:].min() == 1.0


def test_zero_error_spreads_contributions_evenly() -> None:
    errors = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 3.0]], dtype=np.float32)
    scores, contributions = scale_errors(errors, np.array([1.0, 1.0, 2.0], np.float32))
    np.testing.assert_allclose(scores, [0.0, 2.5 / 3])
    np.testing.assert_allclose(contributions, [[1 / 3] * 3, [0.4, 0.0, 0.6]], rtol=1e-6)


@pytest.fixture(scope="module")
def forecaster() -> LSTMForecasterScorer:
    scorer = LSTMForecasterScorer(N_SIGNALS, WINDOW, hidden=16, device="cpu", **FIT)
    scorer.fit(normal_segments(), seed=0)
    return scorer


def test_stream_equals_window_scorer_on_the_first_window(
    forecaster: LSTMForecasterScorer,
) -> None:
    rows = level_shift(held_out_windows())[:4]  # four unrelated assets, one window each
    stream = forecaster.stream()
    assets = ["a", "b", "c", "d"]
    for t in range(WINDOW - 1):
        scores, contributions = stream.step(assets, rows[:, t])
        assert np.isnan(scores).all() and (contributions == 0).all()
    scores, contributions = stream.step(assets, rows[:, WINDOW - 1])
    want_scores, want_contributions = forecaster.score_batch(rows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(contributions, want_contributions, rtol=1e-4, atol=1e-6)


def test_stream_stays_close_to_window_scores_after_warm_up(
    forecaster: LSTMForecasterScorer,
) -> None:
    rows = NORMALIZER.transform(plant(300, seed=11, start=7000))
    rows[200:, SHIFTED] += 3.0  # a fault late in the stream
    stream = forecaster.stream()
    streamed = np.concatenate([stream.step(["pump"], row[None])[0] for row in rows])
    windowed, _ = forecaster.score_batch(windows_of(rows))
    carried = streamed[WINDOW - 1 :]  # the same readings, scored both ways
    assert np.isnan(streamed[: WINDOW - 1]).all()
    # Different estimators (carried state vs a re-run from zero over window - 1 readings),
    # but they agree on what is normal and what is not.
    # (Measured here: correlation 0.996, median ratio 1.00, 10th-90th percentile 0.85-1.17.)
    assert np.corrcoef(np.log(carried), np.log(windowed))[0, 1] > 0.95
    normal = slice(0, 200 - WINDOW + 1)
    ratio = carried[normal] / windowed[normal]
    assert 0.85 < np.median(ratio) < 1.15
    fault = 200 - WINDOW + 1
    assert carried[fault] > 3 * np.quantile(carried[normal], 0.99)


def test_stream_snapshot_restore_continues_identically(
    forecaster: LSTMForecasterScorer,
) -> None:
    rows = NORMALIZER.transform(plant(60, seed=12))
    first = forecaster.stream()
    for row in rows[:30]:
        first.step(["pump", "fan"], np.stack([row, -row]))
    saved = {
        asset: {k: v.copy() for k, v in s.items()} for asset, s in first.snapshot_all().items()
    }
    second = ForecasterStream(forecaster, max_assets=4)
    for asset, state in saved.items():
        second.restore(asset, state)
    for row in rows[30:]:
        batch = np.stack([row, -row])
        for mine, theirs in zip(
            first.step(["pump", "fan"], batch), second.step(["pump", "fan"], batch), strict=True
        ):
            np.testing.assert_array_equal(mine, theirs)
    with pytest.raises(ValueError, match="needs \\(1, 16\\)"):
        second.restore("pump", {**saved["pump"], "h": np.zeros((1, 8), np.float32)})
    with pytest.raises(ValueError, match="version"):
        second.restore("pump", {**saved["pump"], "version": np.array(99)})
    with pytest.raises(KeyError, match="no stream state"):
        second.snapshot("never-seen")


def test_stream_pool_is_bounded_and_handles_repeats(forecaster: LSTMForecasterScorer) -> None:
    rows = NORMALIZER.transform(plant(40, seed=13))
    stream = forecaster.stream(max_assets=2, warmup_steps=0)
    stream.step(["a"], rows[:1])
    stream.step(["b"], rows[:1])
    stream.step(["c"], rows[:1])  # evicts "a", the least recently stepped
    assert stream.assets == ["b", "c"] and stream.evicted_total == 1
    with pytest.raises(ValueError, match="max_assets=2"):
        stream.step(["x", "y", "z"], rows[:3])
    stream.forget(["b", "c"])
    assert len(stream) == 0
    # Two readings of one asset in one call equal two calls in order.
    together = forecaster.stream()
    apart = forecaster.stream()
    for t in range(0, 40, 2):
        got, _ = together.step(["p", "q", "p"], np.stack([rows[t], rows[t], rows[t + 1]]))
        a1, _ = apart.step(["p", "q"], np.stack([rows[t], rows[t]]))
        a2, _ = apart.step(["p"], rows[t + 1 : t + 2])
        np.testing.assert_allclose(got, [a1[0], a1[1], a2[0]], rtol=1e-6, equal_nan=True)


def monitor_windows(rows_by_asset: dict[str, FloatArray]) -> tuple[list[str], FloatArray]:
    """Every window of each asset's rows, grouped by asset in time order (the monitor's)."""
    assets: list[str] = []
    windows: list[FloatArray] = []
    for asset, rows in rows_by_asset.items():
        w = windows_of(rows)
        assets += [asset] * len(w)
        windows.append(w)
    return assets, np.concatenate(windows)


def test_score_windows_primes_exactly_and_then_steps_once_per_window(
    forecaster: LSTMForecasterScorer,
) -> None:
    rows = NORMALIZER.transform(plant(120, seed=21))
    rows[80:, SHIFTED] += 3.0  # a fault: the stream must see it as the window scorer does
    stream = forecaster.stream()
    assets, windows = monitor_windows({"pump": rows, "fan": -rows[:40]})
    scores, contributions = stream.score_windows(assets, windows)
    want, want_c = forecaster.score_batch(windows)
    # Each asset's first window primes the state from its own rows: the window scorer's score.
    first = [0, assets.index("fan")]
    np.testing.assert_allclose(scores[first], want[first], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(contributions[first], want_c[first], rtol=1e-5, atol=1e-6)
    # The rest continue the carried state: another estimator, close to the window's.
    ratio = scores / want
    assert 0.8 < np.median(ratio) < 1.2
    fault = 80 - WINDOW + 1
    assert scores[fault] > 3 * np.quantile(scores[:fault], 0.99)
    assert stream.snapshot("pump")["steps"] == len(rows)
    # A window that does not continue the last one (a gap: rows skipped) primes again.
    after_gap = windows_of(rows[60:80])[:1]
    again, _ = stream.score_windows(["pump"], after_gap)
    np.testing.assert_allclose(again, forecaster.score_batch(after_gap)[0], rtol=1e-5)
    assert stream.snapshot("pump")["steps"] == WINDOW


def test_score_windows_is_the_same_for_every_batch_cut(
    forecaster: LSTMForecasterScorer,
) -> None:
    rng = np.random.default_rng(5)
    rows = {
        f"p{i}": NORMALIZER.transform(plant(int(rng.integers(20, 90)), seed=30 + i))
        for i in range(5)
    }
    whole_stream = forecaster.stream()
    parts: dict[str, list[FloatArray]] = {a: [] for a in rows}
    for asset, r in rows.items():
        w = windows_of(r)
        parts[asset] = np.array_split(w, int(rng.integers(1, 5)))
    assets, windows = monitor_windows(rows)
    whole, whole_c = whole_stream.score_windows(assets, windows)
    # The same windows in other batches: each asset's windows cut in a few pieces, the
    # batches mixing assets differently (grouped by asset within a batch, as the monitor's).
    cut_stream = forecaster.stream()
    got: dict[str, list[FloatArray]] = {a: [] for a in rows}
    got_c: dict[str, list[FloatArray]] = {a: [] for a in rows}
    for k in range(max(len(p) for p in parts.values())):
        batch_assets = [a for a in rows if k < len(parts[a]) and len(parts[a][k])]
        if not batch_assets:
            continue
        b_assets = [a for a in batch_assets for _ in range(len(parts[a][k]))]
        s, c = cut_stream.score_windows(
            b_assets, np.concatenate([parts[a][k] for a in batch_assets])
        )
        at = 0
        for a in batch_assets:
            got[a].append(s[at : at + len(parts[a][k])])
            got_c[a].append(c[at : at + len(parts[a][k])])
            at += len(parts[a][k])
    np.testing.assert_array_equal(np.concatenate([np.concatenate(got[a]) for a in rows]), whole)
    np.testing.assert_array_equal(np.concatenate([np.concatenate(got_c[a]) for a in rows]), whole_c)


def test_score_windows_primes_when_the_offset_jumps_and_carries_a_slow_one(
    forecaster: LSTMForecasterScorer,
) -> None:
    rows = NORMALIZER.transform(plant(80, seed=41))
    windows = windows_of(rows)
    n = len(windows)
    slow = np.zeros((n, N_SIGNALS), np.float32)
    slow[:, 0] = np.linspace(0.0, 0.5, n)  # a drift followed: 0.01 per window
    shifted = windows - slow[:, None, :]
    stream = forecaster.stream()
    scores, _ = stream.score_windows(["p"] * n, shifted, unshifted=windows, shifts=slow)
    want, _ = forecaster.score_batch(shifted)
    assert not np.allclose(scores[1:], want[1:], rtol=1e-5)  # carried, not primed
    assert 0.8 < np.median(scores / want) < 1.2
    jump = slow.copy()
    jump[n // 2 :, 0] += 1.0  # a re-baselining offset from the middle on
    stream = forecaster.stream()
    jumped = windows - jump[:, None, :]
    scores, _ = stream.score_windows(["p"] * n, jumped, unshifted=windows, shifts=jump)
    want, _ = forecaster.score_batch(jumped)
    np.testing.assert_allclose(scores[n // 2], want[n // 2], rtol=1e-5)  # primed afresh
    with pytest.raises(ValueError, match="must match"):
        stream.score_windows(["p"], jumped[:1], unshifted=windows[:1], shifts=jump)


def test_score_windows_state_survives_a_snapshot_and_refuses_bad_input(
    forecaster: LSTMForecasterScorer,
) -> None:
    rows = NORMALIZER.transform(plant(90, seed=51))
    windows = windows_of(rows)
    first = forecaster.stream()
    first.score_windows(["p"] * 40, windows[:40])
    saved = first.snapshot("p")
    second = forecaster.stream()
    second.restore("p", {k: np.asarray(v.tolist()) for k, v in saved.items()})  # via JSON
    for mine, theirs in zip(
        first.score_windows(["p"] * 35, windows[40:]),
        second.score_windows(["p"] * 35, windows[40:]),
        strict=True,
    ):
        np.testing.assert_array_equal(mine, theirs)
    with pytest.raises(ValueError, match="grouped by asset"):
        first.score_windows(["a", "b", "a"], windows[:3])
    with pytest.raises(ValueError, match="expected \\(2, 16, 3\\)"):
        first.score_windows(["a", "b"], windows[:3])
    with pytest.raises(ValueError, match="last window of"):
        second.restore("p", {**saved, "tail": np.zeros((3, 3), np.float32)})
