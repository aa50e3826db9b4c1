"""Re-baselining: a steady new operating point ends its alert; a broken relation never does."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.artifact import TrainedModel
from models.rebaseline import (
    BaselineSubspace,
    BaselineWatch,
    DriftFollower,
    FollowBasis,
    RebaselineConfig,
    follow_runs,
)
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


# -- following slow drift ------------------------------------------------------------------


def alerted_seconds(open_at: list) -> int:
    return sum(1 for o in open_at if o) * 600


def test_a_set_point_step_during_a_calibration_drift_ends_in_a_new_baseline(
    model: TrainedModel,
) -> None:
    rng = np.random.default_rng(8)
    data = plant(7 * HOUR, rng)
    # b loses its calibration: +1.6 (three and a half of its spreads) over four hours, then
    # stays there; the relation b = 2a is off more and more, but never at once. Two hours
    # in, the operating point steps far out of the history, for good.
    data[:, 1] += np.clip((np.arange(len(data)) - HOUR) / (4 * HOUR), 0.0, 1.0) * 1.6
    data[2 * HOUR :] += np.array([1.5, 3.0, -1.5])
    events, _notices, followed = replay(Monitor.from_settings(model, load_settings(env={})), data)
    off = load_settings(env={}, sets=["rebaseline.follow_ms=0"])
    unfollowed = replay(Monitor.from_settings(model, off), data)[2]
    # Without following, the drift's broken relation keeps the step's alert from ending.
    assert alerted_seconds(unfollowed) >= 4 * HOUR, alerted_seconds(unfollowed)
    assert any(e.reason == "rebaselined" for e in events)
    assert alerted_seconds(followed) <= 1.5 * HOUR, alerted_seconds(followed)
    assert followed[-1] == 0


def test_a_fault_on_a_drifting_signal_is_still_alerted(model: TrainedModel) -> None:
    rng = np.random.default_rng(9)
    data = plant(6 * HOUR, rng)
    data[:, 1] += np.clip((np.arange(len(data)) - HOUR) / (4 * HOUR), 0.0, 1.0) * 1.6
    fault = slice(4 * HOUR, 5 * HOUR)
    data[fault, 0] += 0.8  # a alone steps, while b drifts: a fault on top of the drift
    _events, _notices, open_at = replay(Monitor.from_settings(model, load_settings(env={})), data)
    during = open_at[4 * HOUR // 600 + 1 : 5 * HOUR // 600]
    assert all(during), during


@pytest.fixture(scope="module")
def follow_basis(model: TrainedModel) -> tuple[BaselineSubspace, FollowBasis]:
    sub = BaselineSubspace.from_json(model.metadata["baseline_subspace"], 3)
    return sub, FollowBasis.from_json(model.metadata["baseline_follow"])


def test_the_follower_takes_a_ramp_leaves_a_step_and_lets_go(
    follow_basis: tuple[BaselineSubspace, FollowBasis],
) -> None:
    sub, basis = follow_basis
    off_relation = np.array([0.0, 1.0, 0.0]) - sub.inside(np.array([0.0, 1.0, 0.0]))
    n = 4 * HOUR
    ts = T0 + np.arange(n, dtype=np.int64) * 1000
    ramp = np.clip(np.arange(n) / (2 * HOUR), 0, 1)[:, None] * 2.0 * off_relation
    follower = DriftFollower(3, 16)
    offsets = follower.follow(ts, ramp, sub, basis, 3_600_000)
    # Two hours of ramp, then two of the new level: an hour's lag, then caught up.
    assert np.linalg.norm(offsets[-1] - ramp[-1]) < 0.2 * np.linalg.norm(ramp[-1])
    # Back in place at once: the target goes at once, the offset within its time constant.
    later = ts[-1] + 1000 + np.arange(2 * HOUR, dtype=np.int64) * 1000
    back = follower.follow(later, np.zeros((2 * HOUR, 3)), sub, basis, 3_600_000)
    assert np.abs(follower.target).max() < 1e-9
    assert np.linalg.norm(back[-1]) < 0.2 * np.linalg.norm(ramp[-1])
    step = np.zeros((n, 3))
    step[100:] = 2.0 * off_relation
    fresh = DriftFollower(3, 16)
    assert np.abs(fresh.follow(ts, step, sub, basis, 3_600_000)).max() < 1e-9


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-3, 3), min_size=6, max_size=6),
    st.integers(1, 400),
    st.integers(0, 2**31 - 1),
)
def test_following_is_bounded_by_what_the_asset_shows_and_cut_invariant(
    model: TrainedModel, direction: list[float], cut: int, seed: int
) -> None:
    sub = BaselineSubspace.from_json(model.metadata["baseline_subspace"], 3)
    basis = FollowBasis.from_json(model.metadata["baseline_follow"])
    rng = np.random.default_rng(seed)
    n = 500
    ts = T0 + np.cumsum(rng.integers(1, 5000, n)).astype(np.int64)
    walk = np.cumsum(rng.normal(0, 0.02, (n, 3)), axis=0) + np.asarray(direction[:3])
    walk[rng.integers(n) :] += np.asarray(direction[3:])  # a step somewhere
    whole = DriftFollower(3, 16)
    offsets = whole.follow(ts, walk, sub, basis, 600_000)
    pieces = DriftFollower(3, 16)
    parts = [pieces.follow(ts[:cut], walk[:cut], sub, basis, 600_000)]
    again = DriftFollower.restore(pieces.snapshot(), 3, 16)
    parts.append(again.follow(ts[cut:], walk[cut:], sub, basis, 600_000))
    assert np.allclose(np.vstack(parts), offsets, atol=1e-9)
    assert np.isfinite(offsets).all()
    # The target never holds more than what is off the relations now, signal by signal,
    # nor the other way.
    for follower, upto in ((pieces, cut), (whole, n)):
        now = sub.outside(walk[upto - 1 : upto])[0]
        assert (np.abs(follower.target) <= np.abs(now) + 1e-9).all()
        assert (follower.target * now >= -1e-12).all()


def test_a_snapshot_from_before_following_restores_without_a_follower() -> None:
    watch = BaselineWatch.restore({"v": 1, "offset": [0.0] * 3, "ts": [], "levels": []}, 3, 16)
    assert watch.follower is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=5),
    st.integers(1, 4),
    st.integers(0, 2**31 - 1),
)
def test_follow_runs_is_follow_for_each_run(
    follow_basis: tuple[BaselineSubspace, FollowBasis],
    lengths: list[int],
    batches: int,
    seed: int,
) -> None:
    """Several assets' runs side by side (some empty, some followers new, walks with
    jumps): the offsets of every window and every follower's state after each batch."""
    sub, basis = follow_basis
    rng = np.random.default_rng(seed)
    slow = [DriftFollower(3, 16) for _ in lengths]
    fast = [DriftFollower(3, 16) for _ in lengths]
    clock = [T0] * len(lengths)
    level = [rng.normal(0, 1, 3) for _ in lengths]
    for _ in range(batches):
        parts, bounds, at = [], [], 0
        for k, m in enumerate(lengths):
            m = int(rng.integers(0, m + 1))
            steps = rng.normal(0, 0.05, (m, 3))
            steps[rng.random(m) < 0.1] += rng.normal(0, 3, 3)  # a jump now and then
            levels = level[k] + np.cumsum(steps, axis=0)
            if m:
                level[k] = levels[-1]
            ts = clock[k] + np.cumsum(rng.integers(1, 4000, m)).astype(np.int64)
            if m:
                clock[k] = int(ts[-1])
            parts.append((ts, levels))
            bounds.append((at, at + m))
            at += m
        all_ts = np.concatenate([p[0] for p in parts]).astype(np.int64)
        all_levels = np.concatenate([p[1] for p in parts]).reshape(-1, 3)
        got = follow_runs(fast, bounds, all_ts, all_levels, sub, basis, 600_000.0)
        for k, (ts, levels) in enumerate(parts):
            if ts.size:
                expected = slow[k].follow(ts, levels, sub, basis, 600_000.0)
                a, b = bounds[k]
                np.testing.assert_array_equal(got[a:b], expected)
        for f, s_ in zip(fast, slow, strict=True):
            assert f.snapshot() == s_.snapshot()


def factor_plant(rng: np.random.Generator, n: int, loadings: np.ndarray) -> np.ndarray:
    """Many signals driven by a few slow AR(1) disturbances, each with its own noise (0.3)."""
    factors = np.zeros((n, loadings.shape[0]))
    shocks = rng.normal(0, np.sqrt(1 - 0.95**2), factors.shape)
    for t in range(1, n):
        factors[t] = 0.95 * factors[t - 1] + shocks[t]
    return np.asarray(factors @ loadings + rng.normal(0, 0.3, (n, loadings.shape[1])))


def test_a_step_in_one_signal_of_many_is_a_jump_and_is_not_followed() -> None:
    """Among 40 signals a sensor 8 noise-sd off barely moves the residual's length past
    what the other signals' noise moves it by; judged by its own part of the move, it is
    a jump, so the follower leaves it (and the fault stays alerted)."""
    rng = np.random.default_rng(3)
    window, signals = 16, 40
    loadings = rng.normal(0, 1, (4, signals))
    train = factor_plant(rng, 4000, loadings)
    mean, sd = train.mean(axis=0), train.std(axis=0)
    sub = BaselineSubspace.fit((train - mean) / sd)
    basis = FollowBasis.fit([(train - mean) / sd], sub, window)
    assert basis is not None and basis.jumps is not None and len(basis.jumps) == signals
    test = (factor_plant(rng, 3000, loadings) - mean) / sd
    test[1000:, 7] += 8 * 0.3 / sd[7]
    csum = np.cumsum(np.vstack([np.zeros((1, signals)), test]), axis=0)
    levels = (csum[window:] - csum[:-window]) / window  # each window's mean, as the monitor
    ts = T0 + np.arange(levels.shape[0], dtype=np.int64) * 60_000
    step = sub.outside(np.eye(signals)[7] * 8 * 0.3 / sd[7])[7]

    def followed(b: FollowBasis) -> float:
        offsets = DriftFollower(signals, window).follow(ts, levels, sub, b, 3_600_000)
        return float(offsets[-1, 7] / step)

    assert followed(basis) < 0.25
    # By the length alone (artifacts from before per-signal scales), most of it is taken.
    assert followed(FollowBasis(basis.jump)) > 0.35


def test_follow_basis_round_trips_and_reads_artifacts_from_before_per_signal_scales() -> None:
    basis = FollowBasis(1.5, (0.1, 0.2, 0.3))
    assert FollowBasis.from_json(basis.to_json(), 3) == basis
    assert FollowBasis.from_json({"jump": 1.5}, 3) == FollowBasis(1.5)
    with pytest.raises(ValueError, match="2 per-signal jump scales for 3 signals"):
        FollowBasis.from_json({"jump": 1.5, "jumps": [0.1, 0.2]}, 3)
    with pytest.raises(ValueError, match="not a number"):
        FollowBasis.from_json({"jump": 1.5, "jumps": [0.1, float("nan"), 0.3]}, 3)
    moves = np.array([[0.05, 0.05, 0.05], [0.0, 0.25, 0.0], [1.0, 1.0, 1.0]])
    assert basis.calm(moves).tolist() == [True, False, False]
    assert FollowBasis(1.5).calm(moves).tolist() == [True, True, False]
