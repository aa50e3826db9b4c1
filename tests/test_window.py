"""Per-asset windows: cleaning rules, stride, snapshot/restore."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.window import MAX_NORMALISED, AssetWindow, Push

SIGNALS = ("a", "b")
MEAN = np.array([1.0, 10.0], np.float32)
SCALE = np.array([2.0, 5.0], np.float32)


def make(window: int = 3, stride: int = 1, **kw: int) -> AssetWindow:
    return AssetWindow(SIGNALS, window=window, stride=stride, mean=MEAN, scale=SCALE, **kw)


def test_normalises_once_and_keeps_order() -> None:
    w = make()
    results = [w.push(1000 * i, {"a": float(i), "b": 10.0 + i}) for i in range(1, 5)]
    assert results == [Push.WARMING_UP, Push.WARMING_UP, Push.READY, Push.READY]
    expected = np.array([[(i - 1) / 2, i / 5] for i in (2, 3, 4)], np.float32)
    np.testing.assert_allclose(w.window(), expected)


def test_stride() -> None:
    w = make(window=2, stride=3)
    out = [w.push(1000 * i, {"a": 1.0, "b": 1.0}) for i in range(1, 9)]
    # The first full window at once, then every third reading.
    assert [i for i, r in enumerate(out) if r is Push.READY] == [1, 4, 7]
    assert out[0] is Push.WARMING_UP


def test_missing_values_carried_until_stale() -> None:
    w = make(window=2, stale_limit=2)
    w.push(1000, {"a": 1.0, "b": 1.0})
    assert w.push(2000, {"a": 2.0, "b": None}) is Push.READY
    assert w.push(3000, {"a": 3.0}) is Push.READY  # b carried twice: at the limit
    assert w.push(4000, {"a": 4.0}) is Push.STALE
    assert w.push(5000, {"a": 5.0, "b": 2.0}) is Push.READY
    assert w.window()[-1, 1] == np.float32((2.0 - 10.0) / 5.0)


def test_a_value_infinite_in_float32_counts_as_not_sent() -> None:
    # 1e39 is finite as a float64 and infinite as a float32: never in a window. 1e38 fits
    # a float32 but not once normalised by a tiny training spread: clipped, still extreme.
    w = AssetWindow(SIGNALS, window=2, stride=1, mean=MEAN, scale=np.array([1e-3, 5.0], np.float32))
    w.push(1000, {"a": 1.0, "b": 10.0})
    assert w.push(2000, {"a": 1e39, "b": 10.0}) is Push.READY
    assert w.window()[-1, 0] == w.window()[0, 0]  # the last good value carried
    assert w.push(3000, {"a": 1e38, "b": 10.0}) is Push.READY
    assert np.isfinite(w.window()).all()
    assert w.window()[-1, 0] == np.float32(MAX_NORMALISED)
    fresh = make(window=2)
    assert fresh.push(1000, {"a": 1e39, "b": 1.0}) is Push.MISSING  # nothing to carry yet


def test_never_seen_signal_is_missing() -> None:
    w = make(window=1)
    assert w.push(1000, {"a": 1.0}) is Push.MISSING


def test_late_and_duplicate_dropped() -> None:
    w = make(window=1)
    assert w.push(2000, {"a": 1.0, "b": 1.0}) is Push.READY
    assert w.push(2000, {"a": 9.0, "b": 9.0}) is Push.LATE
    assert w.push(1000, {"a": 9.0, "b": 9.0}) is Push.LATE
    assert w.window()[0, 0] == 0.0


def test_long_gap_resets_window() -> None:
    w = make(window=2, max_gap_ms=5_000)
    w.push(1000, {"a": 1.0, "b": 1.0})
    assert w.push(2000, {"a": 1.0, "b": 1.0}) is Push.READY
    assert w.push(60_000, {"a": 1.0, "b": 1.0}) is Push.WARMING_UP
    assert w.gap_resets == 1


def test_unknown_signals_are_ignored_here() -> None:
    # The decoder refuses unknown signals when the model's list is fixed; the window only
    # reads the signals it knows.
    w = make(window=1)
    assert w.push(1000, {"a": 1.0, "b": 1.0, "zzz": 5.0}) is Push.READY


readings = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=3_000),
        st.one_of(st.none(), st.floats(-1e3, 1e3)),
        st.one_of(st.none(), st.floats(-1e3, 1e3)),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(readings, st.integers(0, 60))
def test_snapshot_restore_continues_exactly(
    seq: list[tuple[int, float | None, float | None]], cut: int
) -> None:
    def feed(w: AssetWindow, part: list[tuple[int, float | None, float | None]], t0: int) -> list:
        out = []
        t = t0
        for dt, a, b in part:
            t += dt
            res = w.push(t, {"a": a, "b": b})
            out.append((res, w.window().tolist() if res is Push.READY else None))
        return out

    cut = min(cut, len(seq))
    full = make(window=4, stride=2, stale_limit=3, max_gap_ms=2_500)
    expected = feed(full, seq, 0)

    first = make(window=4, stride=2, stale_limit=3, max_gap_ms=2_500)
    head = feed(first, seq[:cut], 0)
    snap = first.snapshot()
    second = make(window=4, stride=2, stale_limit=3, max_gap_ms=2_500)
    second.restore(snap)
    t0 = sum(dt for dt, _, _ in seq[:cut])
    tail = feed(second, seq[cut:], t0)
    assert head + tail == expected
