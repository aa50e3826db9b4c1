"""Kernels vectorised over readings and signals: the runs, the local median, the checks.

Every rule is built from these; a missing reading (NaN) is no reading for its signal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

_CHUNK_ROWS: Final = 8192  # rows per median pass: bounds the (rows, signals, window) copy

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


def _clean(values: npt.ArrayLike, width: int, what: str) -> F64:
    x = np.array(values, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != width:
        raise ValueError(f"{what} must be (readings, {width} signals), got shape {x.shape}")
    x[~np.isfinite(x)] = np.nan  # inf is no reading either
    return x


def _check_ts(ts_ms: npt.ArrayLike, rows: int) -> I64:
    ts = np.asarray(ts_ms, dtype=np.int64)
    if ts.shape != (rows,):
        raise ValueError(f"ts_ms must be one time per reading ({rows},), got shape {ts.shape}")
    return ts


def _check_segments(segments: Sequence[tuple[int, int]], rows: int) -> list[tuple[int, int]]:
    spans = [(int(a), int(b)) for a, b in segments]
    for a, b in spans:
        if not 0 <= a < b <= rows:
            raise ValueError(f"segment ({a}, {b}) is not a non-empty range within {rows} rows")
    if not spans:
        raise ValueError("sensor health needs at least one training segment")
    return spans


def _or_none(value: float | np.floating[Any]) -> float | None:
    return float(value) if np.isfinite(value) else None


def _floats(values: Sequence[float | int | None]) -> F64:
    return np.array([np.nan if v is None else float(v) for v in values], np.float64)


def _previous_finite(x: F64, last: F64) -> tuple[F64, F64]:
    """Per cell, the signal's latest finite value in an earlier row (``last`` before the
    block; NaN if none), and each signal's latest finite value at the block's end."""
    n, width = x.shape
    finite = np.isfinite(x)
    latest = np.maximum.accumulate(np.where(finite, np.arange(n)[:, None], -1), axis=0)
    before = np.vstack([np.full((1, width), -1), latest[:-1]])
    prev = np.where(before >= 0, np.take_along_axis(x, np.maximum(before, 0), axis=0), last)
    end = latest[-1]
    new_last = np.where(end >= 0, x[np.maximum(end, 0), np.arange(width)], last)
    return prev, new_last


def _unchanged_runs(
    x: F64, ts: I64 | None, tolerance: F64, last: F64, run: I64, run_start: F64
) -> tuple[I64, F64, Bools, tuple[F64, I64, F64]]:
    """For each cell: the length (finite readings) of the run of unchanged values it ends,
    that run's start time (NaN when unknown), and whether the value changed there; plus the
    carry (last value, run length, run start) for the next block."""
    n, _ = x.shape
    finite = np.isfinite(x)
    prev, new_last = _previous_finite(x, last)
    with np.errstate(invalid="ignore"):
        changed = finite & ~(np.abs(x - prev) <= tolerance)  # no previous value: a new run
    count = np.cumsum(finite, axis=0)
    at = np.maximum.accumulate(np.where(changed, np.arange(n)[:, None], -1), axis=0)
    since = at >= 0
    where = np.maximum(at, 0)
    length = np.where(since, count - np.take_along_axis(count, where, axis=0) + 1, run + count)
    stamps = np.full(n, np.nan) if ts is None else ts.astype(np.float64)
    # One time per reading (n,), or per cell (n, width) when assets are side by side.
    at_start = stamps[where] if stamps.ndim == 1 else np.take_along_axis(stamps, where, axis=0)
    began = np.where(since, at_start, run_start)
    return length, began, changed, (new_last, length[-1].copy(), began[-1].copy())


def _consecutive(flag: Bools, finite: Bools, carry: I64) -> tuple[I64, I64]:
    """Per cell, how many finite readings in a row up to it carry ``flag`` (a missing
    reading neither counts nor breaks the row), and the count at the block's end."""
    n, _ = flag.shape
    count = np.cumsum(finite, axis=0)
    at = np.maximum.accumulate(np.where(finite & ~flag, np.arange(n)[:, None], -1), axis=0)
    since = at >= 0
    length = np.where(
        since, count - np.take_along_axis(count, np.maximum(at, 0), axis=0), carry + count
    )
    return length, length[-1].copy()


def _prev_median(x: F64, window: int) -> F64:
    """Per cell, the median of the signal's finite values in the ``window`` rows before it;
    NaN where fewer than half of them are finite (or fewer rows came before)."""
    n, width = x.shape
    med = np.full((n, width), np.nan)
    if n <= window:
        return med
    need = (window + 1) // 2
    views = np.lib.stride_tricks.sliding_window_view(x, window, axis=0)[: n - window]
    for start in range(0, n - window, _CHUNK_ROWS):
        part = np.sort(views[start : start + _CHUNK_ROWS], axis=-1)  # NaN sorts last
        count = np.isfinite(part).sum(axis=-1)
        lo = np.take_along_axis(part, (np.maximum(count - 1, 0) // 2)[..., None], -1)[..., 0]
        hi = np.take_along_axis(part, (count // 2)[..., None], -1)[..., 0]
        mid = lo + (hi - lo) / 2  # == lo exactly for an odd count
        mid[count < need] = np.nan
        med[window + start : window + start + part.shape[0]] = mid
    return med


def _step_levels(x: F64, window: int) -> tuple[F64, F64]:
    """Per cell, the medians of the ``window`` readings it ends (after) and of the
    ``window`` readings before those (before); NaN where either is not known (fewer than
    ``2 * window`` rows before and at the cell, or fewer than half of a half finite).
    ``after - before`` is the level's step ending at the cell, robust to any excursion of
    fewer than ``window / 2`` readings (a spike never moves a median of ``window``)."""
    n, width = x.shape
    padded = np.vstack([x, np.full((1, width), np.nan)])
    med = _prev_median(padded, window)  # med[r]: the window rows before r
    before = np.full((n, width), np.nan)
    after = np.full((n, width), np.nan)
    if n >= 2 * window:
        rows = np.arange(2 * window - 1, n)
        after[rows] = med[rows + 1]
        before[rows] = med[rows + 1 - window]
    return before, after


def _alone(moved: Bools, block: int) -> Bools:
    """Per cell, whether no *other* signal of the same asset moved at that row: the columns
    are assets side by side, ``block`` signals each."""
    n, width = moved.shape
    by_asset = moved.reshape(n, width // block, block)
    others = by_asset.sum(axis=-1, keepdims=True) - by_asset
    alone: Bools = (others == 0).reshape(n, width)
    return alone
