"""The columnar fast path gives exactly what the per-reading path gives.

Random streams with missing values, NaN, values infinite as float32, late and duplicate
timestamps, gaps, several assets interleaved and random batch cuts: push outcomes, windows
and window state of :meth:`AssetWindow.push_many` against :meth:`AssetWindow.push`; then
the whole monitor, ``Monitor.columnar`` against the per-reading path (push outcomes,
windows, scores, thresholds, alert events, drift, notices and every asset's snapshot).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.artifact import TrainedModel
from models.health import RULES, SensorHealth, SensorHealthConfig, SensorHealthProfile, check_many
from models.training import train_model
from plantwatch.monitor import Monitor, Outcome
from plantwatch.settings import load_settings
from stream.schema import SensorReading
from stream.window import PUSHES, AssetWindow, Push, push_runs
from tests.test_pipeline import plant

SIGNALS = ("a", "b", "c")
MEAN = np.array([1.0, 10.0, -3.0], np.float32)
SCALE = np.array([2.0, 5.0, 0.5], np.float32)

number = st.floats(-1e3, 1e3, allow_nan=False, width=32)
#: Mostly numbers; missing, NaN and 1e39 (finite as a float64, infinite as a float32: not
#: sent) often enough to carry, go stale and reset.
value = st.one_of(number, number, number, number, st.none(), st.just(math.nan), st.just(1e39))
#: (time step, values): steps of 0 are duplicates, negative ones late, large ones gaps.
reading = st.tuples(
    st.sampled_from([-2_000, -1, 0, 1_000, 1_000, 1_000, 2_000, 9_000]),
    st.tuples(value, value, value),
)


def make(window: int, stride: int) -> AssetWindow:
    return AssetWindow(
        SIGNALS,
        window=window,
        stride=stride,
        mean=MEAN,
        scale=SCALE,
        stale_limit=2,
        max_gap_ms=5_000,
    )


def as_rows(part: list[tuple[int, tuple[float | None, ...]]]) -> np.ndarray:
    raw = np.array([[math.nan if v is None else v for v in values] for _, values in part])
    with np.errstate(over="ignore"):
        return raw.astype(np.float32).reshape(len(part), len(SIGNALS))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(reading, max_size=80),
    st.lists(st.integers(0, 80), max_size=6),
    st.integers(1, 6),
    st.sampled_from([1, 1, 1, 2, 3]),
)
def test_push_many_is_push_per_reading(
    seq: list[tuple[int, tuple[float | None, ...]]], cuts: list[int], window: int, stride: int
) -> None:
    times, t = [], 0
    for dt, _ in seq:
        t += dt
        times.append(t)
    slow, fast = make(window, stride), make(window, stride)
    expected = []
    for ts, (_, values) in zip(times, seq, strict=True):
        result = slow.push(ts, dict(zip(SIGNALS, values, strict=True)))
        expected.append((result, slow.window().tolist() if result is Push.READY else None))
    got = []
    bounds = [0, *sorted({min(c, len(seq)) for c in cuts}), len(seq)]
    for a, b in itertools.pairwise(bounds):
        codes, windows = fast.push_many(np.array(times[a:b], np.int64), as_rows(seq[a:b]))
        ready = iter(windows.tolist())
        for code in codes.tolist():
            result = PUSHES[code]
            got.append((result, next(ready) if result is Push.READY else None))
        assert next(ready, None) is None
    assert got == expected
    assert fast.snapshot() == slow.snapshot()
    assert fast.window().tolist() == slow.window().tolist()
    assert fast.last_reading().tolist() == slow.last_reading().tolist()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(reading, max_size=40), min_size=1, max_size=4),
    st.lists(st.integers(0, 40), max_size=4),
    st.integers(1, 6),
    st.lists(st.sampled_from([3_000, 5_000, 60_000]), min_size=4, max_size=4),
)
def test_push_runs_is_push_many_for_each_asset(
    streams: list[list[tuple[int, tuple[float | None, ...]]]],
    cuts: list[int],
    window: int,
    gaps: list[int],
) -> None:
    """Several assets in one pass of arrays, each with its own gap limit and history, cut
    into the same batches (some runs empty): outcomes, windows, their rows, every state."""
    times = []
    for seq in streams:
        t, ts = 0, []
        for dt, _ in seq:
            t += dt
            ts.append(t)
        times.append(ts)

    def fresh() -> list[AssetWindow]:
        states = [make(window, 1) for _ in streams]
        for state, gap in zip(states, gaps, strict=False):
            state.max_gap_ms = gap
        return states

    slow, fast = fresh(), fresh()
    bounds = [0, *sorted({min(c, 40) for c in cuts}), 40]
    for a, b in itertools.pairwise(bounds):
        parts = [
            (np.array(ts[a:b], np.int64), as_rows(seq[a:b]))
            for ts, seq in zip(times, streams, strict=True)
        ]
        starts = np.cumsum([0] + [p[0].shape[0] for p in parts[:-1]]).astype(np.int64)
        all_ts = np.concatenate([p[0] for p in parts])
        all_rows = np.concatenate([p[1] for p in parts]).reshape(-1, len(SIGNALS))
        codes, windows, ends = push_runs(fast, all_ts, all_rows, starts)
        expected_codes, expected_windows, expected_ends = [], [], []
        for k, (state, (ts_k, rows_k)) in enumerate(zip(slow, parts, strict=True)):
            c, w = state.push_many(ts_k, rows_k)
            expected_codes.append(c)
            expected_windows.append(w)
            expected_ends.append(int(starts[k]) + np.flatnonzero(c == PUSHES.index(Push.READY)))
        assert codes.tolist() == np.concatenate(expected_codes).tolist()
        assert (
            windows.tolist()
            == np.concatenate(expected_windows).reshape(-1, window, len(SIGNALS)).tolist()
        )
        assert ends.tolist() == np.concatenate(expected_ends).tolist()
        for f, s_ in zip(fast, slow, strict=True):
            assert f.snapshot() == s_.snapshot()
            assert f.window().tolist() == s_.window().tolist()


# -- the monitor: columnar batches against the per-reading path ---------------------------

T0 = 1_795_899_600_000
PLANT = ("a", "b", "c")


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    return train_model(plant(8_000, np.random.default_rng(3)), PLANT, window=16, scorer="pca")


def messy_stream(seed: int, n_assets: int, dirt: float) -> list[SensorReading]:
    """Assets interleaved, with faults that open and close alerts, spikes and frozen
    sensors, and the dirt of a real feed: missing values, NaN, values infinite as float32,
    duplicate and late timestamps, gaps, readings out of order."""
    rng = np.random.default_rng(seed)
    n = 500
    readings = []
    for a in range(n_assets):
        asset = f"p{a}"
        data = plant(n, rng)
        start = int(rng.integers(50, 300))
        data[start : start + int(rng.integers(20, 150)), a % 3] += float(rng.uniform(0.5, 1.5))
        data[int(rng.integers(300, 480)), 2] += 3.0
        frozen = int(rng.integers(0, 400))
        data[frozen : frozen + 60, 1] = data[frozen, 1]
        ts = T0 + np.arange(n, dtype=np.int64) * 1000 + int(rng.integers(0, 1000))
        for g in rng.integers(1, n, 2):  # gaps longer than max_gap_ms
            ts[g:] += 40_000
        for i in range(n):
            values: dict[str, float | None] = dict(zip(PLANT, data[i].tolist(), strict=True))
            for s in PLANT:
                u = rng.random()
                if u < dirt:
                    values[s] = None
                elif u < 1.5 * dirt:
                    values[s] = math.nan
                elif u < 1.7 * dirt:
                    values[s] = 1e39
                elif u < 2.2 * dirt:
                    del values[s]
            t = int(ts[i])
            if rng.random() < dirt:
                t = int(ts[max(i - int(rng.integers(0, 4)), 0)])  # duplicate or late
            readings.append(SensorReading(asset, t, values))
    readings.sort(key=lambda r: r.ts_ms)
    # Some neighbours swapped: out of time order within a batch (or across a cut: late).
    for i in rng.integers(0, len(readings) - 1, int(dirt * len(readings))):
        readings[i], readings[i + 1] = readings[i + 1], readings[i]
    return readings


def outcome_key(out: Outcome) -> tuple:
    sc = out.scored
    return (
        dict(out.pushes),
        out.reordered,
        sc.assets,
        sc.ts_ms.tolist(),
        sc.source_index.tolist(),
        sc.scores.tolist(),
        sc.thresholds.tolist(),
        sc.anomalous.tolist(),
        sc.severity.tolist(),
        sc.contributions.tolist(),
        sc.alert_open.tolist(),
        out.events,
        [(a, t, repr(e)) for a, t, e in out.drift],
        out.notices,
    )


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**16),
    n_assets=st.integers(1, 4),
    dirt=st.sampled_from([0.0, 0.01, 0.05]),
    stride=st.sampled_from([1, 1, 1, 3]),
    cuts=st.lists(st.integers(1, 1999), max_size=10),
)
def test_monitor_columnar_is_the_per_reading_path(
    model: TrainedModel, seed: int, n_assets: int, dirt: float, stride: int, cuts: list[int]
) -> None:
    readings = messy_stream(seed, n_assets, dirt)
    settings = load_settings(env={}, overrides={"window": {"stride": stride, "max_gap_ms": 30_000}})
    slow = Monitor.from_settings(model, settings)
    slow.columnar = False
    slow.drift_side_by_side = False  # the reference: one DriftMonitor.update per asset run
    fast = Monitor.from_settings(model, settings)
    eligible = {id(slow): [], id(fast): []}  # what online learning would be offered
    for monitor in (slow, fast):
        judge = monitor._judge

        def spy(*args: object, judge: Callable[..., tuple] = judge, at: int = id(monitor)) -> tuple:
            out = judge(*args)
            eligible[at].append(out[2].tolist())
            return out

        monitor._judge = spy  # type: ignore[method-assign]
    bounds = [0, *sorted({min(c, len(readings)) for c in cuts}), len(readings)]
    opened = False
    for a, b in itertools.pairwise(bounds):
        now = T0 + 1000 * b
        expected = slow.process(readings[a:b], now_ms=now)
        got = fast.process(readings[a:b], now_ms=now)
        assert outcome_key(got) == outcome_key(expected)
        opened |= any(e.event == "opened" for e in expected.events)
    assert opened or dirt == 0.0 or n_assets == 1  # not trivial
    assert eligible[id(fast)] == eligible[id(slow)]
    assert fast.assets == slow.assets
    for asset in slow.assets:
        assert fast.snapshot_asset(asset) == slow.snapshot_asset(asset)


# -- sensor health: assets side by side against one check per asset ----------------------


@pytest.fixture(scope="module")
def profile() -> SensorHealthProfile:
    rng = np.random.default_rng(5)
    train = np.column_stack([rng.normal(50.0, 1.0, 3000), np.round(rng.normal(0, 1, 3000), 1)])
    return SensorHealthProfile.fit(train, [(0, 3000)], ("temp", "flow"))


def sensor_stream(rng: np.random.Generator, n: int) -> np.ndarray:
    x = np.column_stack([rng.normal(50.0, 1.0, n), np.round(rng.normal(0, 1, n), 1)])
    for _ in range(3):
        at = int(rng.integers(0, max(n, 1)))
        kind = rng.integers(0, 3)
        if kind == 0:
            x[at : at + 50, 0] = x[at, 0]  # frozen
        elif kind == 1:
            x[at, 1] += 30.0  # spike
        else:
            x[at : at + 10, 0] += 40.0  # out of range
    x[rng.random(x.shape) < 0.05] = np.nan
    x[rng.random(x.shape) < 0.01] = np.inf
    return x


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**16), n_assets=st.integers(1, 5), batches=st.integers(1, 12))
def test_health_side_by_side_is_one_check_per_asset(
    profile: SensorHealthProfile, seed: int, n_assets: int, batches: int
) -> None:
    rng = np.random.default_rng(seed)
    config = SensorHealthConfig()
    data = [sensor_stream(rng, int(rng.integers(1, 300))) for _ in range(n_assets)]
    times = [T0 + 1000 * np.arange(len(d), dtype=np.int64) for d in data]
    cuts = [np.sort(rng.integers(0, len(d) + 1, batches)) for d in data]
    alone = [SensorHealth(profile, config) for _ in data]
    together = [SensorHealth(profile, config) for _ in data]
    for b in range(batches + 1):
        spans = [
            (0 if b == 0 else int(c[b - 1]), len(d) if b == batches else int(c[b]))
            for c, d in zip(cuts, data, strict=True)
        ]
        found = check_many(
            together,
            [d[s:e] for d, (s, e) in zip(data, spans, strict=True)],
            [t[s:e] for t, (s, e) in zip(times, spans, strict=True)],
        )
        for health, d, t, (s, e), got in zip(alone, data, times, spans, found, strict=True):
            want = health.check(d[s:e], t[s:e])
            assert got.present.tolist() == want.present.tolist()
            for rule in RULES:
                assert got.fired[rule].tolist() == want.fired[rule].tolist()
                assert got.scores[rule].tolist() == want.scores[rule].tolist()
                assert got.limits[rule].tolist() == want.limits[rule].tolist()
    for a, b in zip(alone, together, strict=True):
        assert json.dumps(a.snapshot()) == json.dumps(b.snapshot())
