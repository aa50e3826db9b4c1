"""Tests for the per-asset drift monitor and its Page-Hinkley test (models/drift.py)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.drift import DriftConfig, DriftEvent, DriftMonitor, PageHinkley, update_runs

SIGNALS = ("temp", "pressure", "flow")


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    noise = rng.normal(size=n)
    out = np.empty(n)
    out[0] = noise[0]
    for i in range(1, n):
        out[i] = phi * out[i - 1] + noise[i]
    return out


@pytest.mark.parametrize("shift, max_delay", [(1.0, 400), (2.0, 100), (3.0, 50)])
def test_signal_mean_shift_is_detected_within_a_bounded_delay(shift: float, max_delay: int) -> None:
    # Page-Hinkley's delay is about threshold / (shift - delta) = 50 / (shift - 0.5) values.
    rng = np.random.default_rng(1)
    for _ in range(5):
        monitor = DriftMonitor(SIGNALS)
        means = rng.normal(size=(4000, 3))
        means[2000:, 1] += shift
        events = monitor.update(rng.exponential(size=4000), means)
        assert [(e.kind, e.signal, e.direction) for e in events] == [("signal", "pressure", "up")]
        assert 2000 <= events[0].detected_at_index <= 2000 + max_delay


def test_downward_score_shift_is_a_score_event() -> None:
    rng = np.random.default_rng(2)
    monitor = DriftMonitor()
    scores = np.r_[rng.normal(10.0, 1.0, 3000), rng.normal(7.0, 1.0, 500)]
    events = monitor.update(scores)
    assert len(events) == 1
    event = events[0]
    assert (event.kind, event.signal, event.direction) == ("score", None, "down")
    assert 3000 <= event.detected_at_index <= 3050
    assert event.reference_mean == pytest.approx(10.0, abs=0.2)


@pytest.mark.parametrize("name", ["normal", "exponential", "moving-average-60", "ar1-0.95"])
def test_no_detection_on_a_long_stationary_stream(name: str) -> None:
    # Scores of overlapping windows are autocorrelated; the long-run reference keeps them quiet.
    rng = np.random.default_rng(3)
    n = 200_000
    if name == "normal":
        values = rng.normal(size=n)
    elif name == "exponential":
        values = rng.exponential(size=n)
    elif name == "moving-average-60":
        values = np.convolve(rng.normal(size=n + 59), np.ones(60) / 60, mode="valid")
    else:
        values = _ar1(rng, n, 0.95)
    assert PageHinkley(DriftConfig()).update(values) == []


def test_anomalous_fraction_separates_drift_from_an_anomaly_episode() -> None:
    rng = np.random.default_rng(4)
    means = rng.normal(size=(3000, 3))
    means[2000:, 0] += 3.0
    quiet = np.zeros(3000, dtype=bool)
    episode = quiet.copy()
    episode[1990:] = True  # the score crossed its threshold as the inputs moved
    (drift,) = DriftMonitor(SIGNALS).update(rng.exponential(size=3000), means, quiet)
    (anomaly,) = DriftMonitor(SIGNALS).update(rng.exponential(size=3000), means, episode)
    assert drift.is_drift and drift.anomalous_fraction == 0.0
    assert not anomaly.is_drift and anomaly.anomalous_fraction > 0.05
    assert drift.signal == anomaly.signal == "temp"


def test_indices_count_across_batches_and_missing_values_are_skipped() -> None:
    rng = np.random.default_rng(5)
    monitor = DriftMonitor(["temp"], DriftConfig(warmup=100))
    means = rng.normal(size=(1000, 1))
    means[::7, 0] = np.nan  # the signal was missing from those windows
    means[600:, 0] += 4.0
    events: list[DriftEvent] = []
    for lo in range(0, 1000, 128):
        batch = monitor.update(
            rng.exponential(size=means[lo : lo + 128].shape[0]), means[lo : lo + 128]
        )
        events.extend(batch)
        for e in batch:
            assert e.detected_at_index == lo + e.batch_index
    assert [e.signal for e in events] == ["temp"]
    assert 600 <= events[0].detected_at_index <= 640
    assert monitor.n_seen == 1000


def test_bad_shapes_and_snapshots_raise_with_a_reason() -> None:
    monitor = DriftMonitor(SIGNALS)
    with pytest.raises(ValueError, match="shape"):
        monitor.update(np.zeros(4), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="one flag per score"):
        monitor.update(np.zeros(4), None, np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="unique"):
        DriftMonitor(["a", "a"])
    with pytest.raises(ValueError, match="warmup"):
        DriftConfig(warmup=10, blocks=10)  # a cross-field rule: checked by the class itself
    with pytest.raises(msgspec.ValidationError, match="unknown field `colour`"):
        DriftMonitor.restore({**monitor.snapshot(), "config": {"colour": "red"}})
    with pytest.raises(ValueError, match="drift-monitor snapshot"):
        DriftMonitor.restore({**monitor.snapshot(), "v": 9})


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"warmup": 10, "blocks": 10}, "warmup"),
        ({"delta": -0.1}, r"\$\.delta"),
        ({"threshold": 0.0}, r"\$\.threshold"),
        ({"blocks": 1}, r"\$\.blocks"),
        ({"min_std": 0.0}, r"\$\.min_std"),
        ({"recent": 0}, r"\$\.recent"),
        ({"max_anomalous_fraction": 1.5}, r"\$\.max_anomalous_fraction"),
        ({"max_anomalous_fraction": float("nan")}, r"\$\.max_anomalous_fraction"),
        ({"lambda": 3.0}, "unknown field"),
    ],
)
def test_config_is_validated_when_converted(values: dict[str, Any], reason: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=reason):
        msgspec.convert(values, DriftConfig)
    with pytest.raises(ValueError, match=reason):  # ValidationError is a ValueError
        DriftConfig.validated(**values)
    if "lambda" not in values:
        # Calling the class skips the ranges; the monitor checks them before it starts.
        with pytest.raises(ValueError, match=reason):
            DriftMonitor(SIGNALS, DriftConfig(**values))


def test_config_round_trips_through_json() -> None:
    config = DriftConfig.validated(delta=1, warmup=60, blocks=6)
    assert config.delta == 1.0 and isinstance(config.delta, float)
    assert DriftConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    assert DriftConfig.validated() == DriftConfig()


@pytest.mark.parametrize(("warmup", "blocks"), [(60, 6), (500, 10), (97, 7)])
def test_warm_up_sums_give_the_reference_of_its_values(warmup: int, blocks: int) -> None:
    """Kept as running sums, the warm-up sets the reference its values would: the mean, and
    the larger of the plain and the long-run spread of ``np.array_split``'s block means."""
    values = np.random.default_rng(warmup).normal(3.0, 2.0, warmup).cumsum() * 1e-2 + 5.0
    test = PageHinkley(DriftConfig(warmup=warmup, blocks=blocks))
    for piece in np.array_split(values, 5):
        test.update(piece)
    block_means = np.array([b.mean() for b in np.array_split(values, blocks)])
    long_run = block_means.std(ddof=1) * np.sqrt(warmup / blocks)
    assert test.count == warmup and test.warm_n == 0
    assert test.ref_mean == pytest.approx(values.mean(), rel=1e-12)
    assert test.ref_std == pytest.approx(max(values.std(ddof=1), long_run), rel=1e-9)
    assert test.total == pytest.approx(values.sum(), rel=1e-12)


def test_a_warming_snapshot_is_small_and_one_with_warm_up_values_still_restores() -> None:
    config = DriftConfig(warmup=500, blocks=10)
    values = np.random.default_rng(3).normal(size=900)
    values[700:] += 4.0
    fresh = PageHinkley(config)
    expected = fresh.update(values)
    assert expected and expected[0][0] > 500  # the shift, after the warm-up
    half = PageHinkley(config)
    half.update(values[:400])
    snap = half.to_json()
    assert len(json.dumps(snap)) < 600  # not 400 floats
    # As written before the warm-up was kept as sums: its values in a list.
    old = {k: v for k, v in snap.items() if k != "warmup"}
    old["warmup_values"] = values[:400].tolist()
    for restored in (PageHinkley.from_json(config, snap), PageHinkley.from_json(config, old)):
        assert restored.to_json() == snap
        assert restored.update(values[400:]) == [(e[0] - 400, *e[1:]) for e in expected]
    with pytest.raises(ValueError, match="warm-up blocks"):
        PageHinkley.from_json(config, {**snap, "warmup": {**snap["warmup"], "block_sums": [0.0]}})
    with pytest.raises(ValueError, match="warm-up holds"):
        PageHinkley.from_json(config, {**snap, "warmup": {**snap["warmup"], "n": 500}})


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    length=st.integers(1, 3000),
    cut_at=st.floats(0.0, 1.0),
    pieces=st.integers(1, 5),
    shift_at=st.integers(0, 3000),
)
def test_snapshot_restore_continues_bit_identically(
    seed: int, length: int, cut_at: float, pieces: int, shift_at: int
) -> None:
    rng = np.random.default_rng(seed)
    config = DriftConfig(warmup=60, blocks=6, recent=50)
    scores = rng.exponential(size=length)
    scores[shift_at:] += 3.0
    means = rng.normal(size=(length, 2))
    means[shift_at // 2 :, 1] -= 2.0
    means[rng.random((length, 2)) < 0.02] = np.nan
    anomalous = rng.random(length) < 0.05

    whole = DriftMonitor(["a", "b"], config)
    expected = whole.update(scores, means, anomalous)

    cut = int(cut_at * length)
    first = DriftMonitor(["a", "b"], config)
    events = first.update(scores[:cut], means[:cut], anomalous[:cut])
    snap: dict[str, Any] = json.loads(json.dumps(first.snapshot(), allow_nan=False))
    resumed = DriftMonitor.restore(snap)
    bounds = np.unique(np.r_[cut, np.sort(rng.integers(cut, length + 1, pieces - 1)), length])
    for lo, hi in itertools.pairwise(bounds):
        events.extend(resumed.update(scores[lo:hi], means[lo:hi], anomalous[lo:hi]))
    # Short batches take a per-value loop, long ones numpy: both must agree to the bit.
    trickle = DriftMonitor(["a", "b"], config)
    trickled: list[DriftEvent] = []
    lo = 0
    while lo < length:
        hi = lo + int(rng.integers(1, 40))
        trickled.extend(trickle.update(scores[lo:hi], means[lo:hi], anomalous[lo:hi]))
        lo = hi

    def key(e: DriftEvent) -> tuple[Any, ...]:
        return (
            e.kind,
            e.signal,
            e.detected_at_index,
            e.direction,
            e.reference_mean,
            e.reference_std,
            e.mean_since_reference,
            e.anomalous_fraction,
            e.is_drift,
        )

    assert sorted(map(key, events), key=str) == sorted(map(key, expected), key=str)
    assert sorted(map(key, trickled), key=str) == sorted(map(key, expected), key=str)
    assert resumed.snapshot() == whole.snapshot() == trickle.snapshot()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    batches=st.lists(st.lists(st.integers(0, 40), min_size=1, max_size=6), min_size=1, max_size=8),
)
def test_update_runs_is_update_for_each_monitor(seed: int, batches: list[list[int]]) -> None:
    """Side by side or one by one: the same events and the same state, bit for bit, through
    warm-ups, detections (level steps), missing values and long runs."""
    config = DriftConfig(warmup=20, blocks=2, threshold=8.0, recent=15)
    rng = np.random.default_rng(seed)
    n_assets = max(len(b) for b in batches)
    together = [DriftMonitor(["a", "b"], config) for _ in range(n_assets)]
    apart = [DriftMonitor(["a", "b"], config) for _ in range(n_assets)]
    level = np.zeros(n_assets)
    for lengths in batches:
        bounds, start = [], 0
        for n in lengths:
            bounds.append((start, start + n))
            start += n
        level += rng.choice([0.0, 0.0, 4.0], size=n_assets)  # steps now and then: detections
        asset = np.repeat(np.arange(len(lengths)), lengths)
        scores = rng.exponential(size=start) + level[asset]
        means = rng.normal(size=(start, 2)) + level[asset, None]
        means[rng.random(size=(start, 2)) < 0.02] = np.nan  # a signal missing from a window
        flags = rng.random(size=start) < 0.1
        got = update_runs(together[: len(lengths)], bounds, scores, means, flags)
        want = [
            m.update(scores[a:b], means[a:b], flags[a:b])
            for m, (a, b) in zip(apart[: len(lengths)], bounds, strict=True)
        ]
        assert got == want
    for mine, theirs in zip(together, apart, strict=True):
        assert mine.snapshot() == theirs.snapshot()
