"""The columnar fast path gives exactly what the per-reading path gives.

Random streams with missing values, NaN, values infinite as float32, late and duplicate
timestamps, gaps, several assets interleaved and random batch cuts: push outcomes, windows
and window state of :meth:`AssetWindow.push_many` against :meth:`AssetWindow.push`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.window import PUSHES, AssetWindow, Push

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
