"""One signal: the PCA scorer's time-delay embedding, and a univariate stream as deployed.

A univariate model of single readings only checks the value against its training range, so
a spike or a burst of noise inside the range scored as normal, and a level that moved and
stayed kept an alert open for as long as it lasted (bench/univariate.py before the
embedding: 12 of 36 anomalies found, 86 false alerts).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from models.baseline.pca import UNIVARIATE_LAGS, PCAScorer
from plantwatch.cli import main


def _cycle(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n)
    return 10 + 2 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 0.3, n)


def _windows(x: np.ndarray, window: int) -> np.ndarray:
    view = np.lib.stride_tricks.sliding_window_view(x, window)
    return np.ascontiguousarray(view[:, :, None], dtype=np.float32)


def test_a_spike_inside_the_range_is_seen_by_the_embedding_only() -> None:
    rng = np.random.default_rng(0)
    x = _cycle(3000, rng)
    z = (x - x[:2000].mean()) / x[:2000].std()
    test = z[2000:].copy()
    test[500] += 6 * 0.3 / x[:2000].std()  # 6 noise sd: still inside the cycle's range
    embedded = PCAScorer(1, 32)
    plain = PCAScorer(1, 32, lags=1, centre=False)
    assert (embedded.lags, embedded.centre) == (UNIVARIATE_LAGS, True)
    for scorer in (embedded, plain):
        scorer.fit([z[:2000, None].astype(np.float32)])
    near = slice(500 - 31, 500 + 8)  # windows whose lags hold the spike
    for scorer, seen in ((embedded, True), (plain, False)):
        scores, contributions = scorer.score_batch(_windows(test, 32))
        calm = np.delete(scores, np.r_[near])
        assert bool(scores[near].max() > 1.5 * calm.max()) is seen, scorer.get_config()
        assert contributions.shape == (scores.size, 1)


def test_a_level_that_moves_and_stays_does_not_change_the_shape_score() -> None:
    rng = np.random.default_rng(1)
    x = _cycle(3000, rng)
    z = ((x - x.mean()) / x.std())[:, None].astype(np.float32)
    scorer = PCAScorer(1, 32)
    scorer.fit([z[:2000]])
    before, _ = scorer.score_batch(_windows(z[2000:, 0], 32))
    after, _ = scorer.score_batch(_windows(z[2000:, 0] + 3.0, 32))  # 3 sd higher, for good
    np.testing.assert_allclose(before, after, rtol=1e-4, atol=1e-4)


def test_state_round_trips_and_old_artifacts_score_plain_readings() -> None:
    rng = np.random.default_rng(2)
    z = rng.normal(size=(600, 1)).astype(np.float32)
    scorer = PCAScorer(1, 16)
    scorer.fit([z])
    copy = PCAScorer.from_state(scorer.get_config(), scorer.state_tensors())
    windows = _windows(z[:, 0], 16)[:50]
    np.testing.assert_array_equal(copy.score_batch(windows)[0], scorer.score_batch(windows)[0])
    # A config written before the embedding existed has no "lags": plain readings.
    old = PCAScorer(1, 16, lags=1, centre=False)
    old.fit([z])
    config = {k: v for k, v in old.get_config().items() if k not in ("lags", "centre")}
    restored = PCAScorer.from_state(config, old.state_tensors())
    assert (restored.lags, restored.centre) == (1, False)
    np.testing.assert_array_equal(restored.score_batch(windows)[0], old.score_batch(windows)[0])


def test_a_univariate_stream_as_deployed_finds_spikes_and_bursts_and_takes_a_new_level(
    tmp_path: Path,
) -> None:
    # Five-minute readings, a daily cycle; in the test part two spikes of 6 noise sd, a burst
    # of noise, and a level that moves by 5 noise sd and stays (only its first 40 rows are
    # labelled, as a benchmark labels a change).
    rng = np.random.default_rng(5)
    n = 6000
    x = _cycle(n, rng)
    label = np.zeros(n, dtype=int)
    for at in (3000, 3700):
        x[at] += 1.8
        label[at] = 1
    x[4200:4300] = x[4200:4300] + rng.normal(0, 0.9, 100)
    label[4200:4300] = 1
    x[4900:] += 1.5
    label[4900:4940] = 1
    src = tmp_path / "stream.csv"
    src.write_text(
        "timestamp,value,label\n"
        + "".join(f"{1_700_000_000 + 300 * i},{v:.5f},{lab}\n" for i, (v, lab) in
                  enumerate(zip(x, label, strict=True)))
    )  # fmt: skip
    out, report = tmp_path / "out.csv", tmp_path / "report.json"
    args = ["backtest", "--input", str(src), "--train-fraction", "0.4", "--labels", "label"]
    assert main([*args, "--out", str(out), "--report", str(report)]) == 0
    assert json.loads(report.read_text())["alerts"]["events_labelled"] == 4
    header = out.read_text().splitlines()[0].replace('"', "").split(",")
    rows = [line.split(",") for line in out.read_text().splitlines()[1:]]
    anomaly = np.array([r[header.index("anomaly")] == "1" for r in rows])
    truth = label[2400:].astype(bool)
    # A one-row spike is known a few readings later: an alert opening within a window
    # length of a labelled stretch is for it; any other is false.
    spans = _spans(anomaly)
    events = _spans(truth)
    detected = [any(a < e + 32 and b > s for a, b in spans) for s, e in events]
    false = [(a, b) for a, b in spans if not any(a < e + 32 and b > s for s, e in events)]
    assert all(detected), (events, spans)
    assert len(false) <= 3, false  # in 12.5 days
    # The new level is not a flood: after its labelled rows, almost nothing is alerted.
    after = anomaly[4940 - 2400 :]
    assert after.mean() < 0.02, after.mean()


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
