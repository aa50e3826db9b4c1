"""A consumed batch into ready windows: the columnar path and the per-reading one.

:func:`window_columns` takes the batch as arrays once (asset codes, int64 times, a float
matrix with NaN for missing), orders it with one stable ``np.lexsort`` on (asset, time)
and pushes each asset's run at once (:meth:`AssetWindow.push_many`). :func:`window_each`
pushes reading by reading; it is the reference the columnar path is proven identical to
(``tests/test_columnar.py``) and what a batch of a few readings takes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from stream.schema import SensorReading
from stream.window import PUSHES, AssetWindow, Push, in_segment_max, push_runs

FloatArray = npt.NDArray[np.float32]
#: The asset's window (made on first use): what the monitor holds per asset.
WindowFor = Callable[[str], AssetWindow]


@dataclass
class Windowed:
    """What windowing one batch gave: push outcomes, accepted readings, ready windows."""

    pushes: Counter[str]
    reordered: int
    #: Indices of the readings not dropped as late, grouped by asset, in time order.
    accepted: list[int]
    #: The ready windows (windows, window, signals), grouped by asset, in time order.
    batch: FloatArray
    assets: list[str]
    ts_ms: npt.NDArray[np.int64]
    #: Position in the batch's input of the reading that completed each window.
    sources: npt.NDArray[np.int64]
    #: The columnar path's batch: every reading's time and raw values (readings, signals),
    #: NaN where missing; and each asset's accepted readings (rows of those), in order.
    columns: tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]] | None = None
    accepted_runs: list[tuple[str, npt.NDArray[np.intp]]] = field(default_factory=list)


_NO_INTS = np.zeros(0, np.int64)
#: Batches smaller than this take the per-reading path (the same results, less set-up).
_FEW_READINGS = 8
_READY = PUSHES.index(Push.READY)
_LATE = PUSHES.index(Push.LATE)


def window_each(
    readings: Sequence[SensorReading], window_for: WindowFor, empty: FloatArray
) -> Windowed:
    """The per-reading path: each reading pushed on its own (the reference the columnar
    path is tested against, and what a batch of a few readings takes)."""
    order, reordered = _time_order(readings)
    pushes: Counter[str] = Counter()
    windows: list[npt.NDArray[np.float32]] = []
    assets: list[str] = []
    ts: list[int] = []
    sources: list[int] = []
    accepted: list[int] = []
    for i in order:
        reading = readings[i]
        state = window_for(reading.asset)
        result = state.push(reading.ts_ms, reading.values)
        pushes[result.value] += 1
        if result is not Push.LATE:
            accepted.append(i)
        if result is Push.READY:
            windows.append(state.window().copy())
            assets.append(reading.asset)
            ts.append(reading.ts_ms)
            sources.append(i)
    return Windowed(
        pushes=pushes,
        reordered=reordered,
        accepted=accepted,
        batch=np.stack(windows) if windows else empty,
        assets=assets,
        ts_ms=np.asarray(ts, np.int64),
        sources=np.asarray(sources, np.int64),
    )


def window_columns(
    readings: Sequence[SensorReading],
    signals: Sequence[str],
    window_for: WindowFor,
    empty: FloatArray,
    *,
    one_pass: bool = True,
) -> Windowed:
    """The columnar path: the batch as arrays once, ordered by asset then time with one
    stable sort, and every asset's run pushed in one pass of arrays
    (:func:`stream.window.push_runs`); windows of another stride or length than the
    first asset's take each run on its own (:meth:`AssetWindow.push_many`), as every run
    does with ``one_pass=False``.

    Exactly :func:`window_each`: the same order (assets sorted by name, readings in
    time order within each, input order among equal times), outcomes and windows.
    """
    n = len(readings)
    if n < _FEW_READINGS:
        return window_each(readings, window_for, empty)  # the arrays would cost more than they save
    names = [r.asset for r in readings]
    uniq = sorted(set(names))
    code_of = {a: c for c, a in enumerate(uniq)}
    codes = np.fromiter((code_of[a] for a in names), np.int64, n)
    ts = np.fromiter((r.ts_ms for r in readings), np.int64, n)
    # None becomes NaN; a value infinite as a float32 (1e39) is no value to the window.
    raw = np.array([[r.values.get(s) for s in signals] for r in readings], np.float64)
    with np.errstate(over="ignore"):
        rows = raw.astype(np.float32)
    order = np.lexsort((ts, codes))
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    starts = np.concatenate([[0], bounds]).tolist()
    ends = np.concatenate([bounds, [n]]).tolist()
    states = [window_for(names[int(order[a])]) for a in starts]
    first = states[0]
    if one_pass and all(
        st.stride == 1 and st.window_size == first.window_size and st.signals == first.signals
        for st in states
    ):
        return _window_runs(names, codes, ts, raw, rows, order, starts, states, empty)
    results = np.empty(n, np.int8)
    reordered = 0
    windows: list[npt.NDArray[np.float32]] = []
    assets: list[str] = []
    ts_ready: list[npt.NDArray[np.int64]] = []
    sources: list[npt.NDArray[np.int64]] = []
    accepted_runs: list[tuple[str, npt.NDArray[np.intp]]] = []
    for start, end in zip(starts, ends, strict=True):
        idx = order[start:end]
        asset = names[int(idx[0])]
        run_ts = ts[idx]
        if end - start == 1:
            pushed, ready = _push_one(window_for(asset), readings[int(idx[0])], empty)
        else:
            # Out of time order: older than a reading of the asset that came before it.
            arrival = np.sort(idx)
            seen = np.maximum.accumulate(ts[arrival])
            reordered += int((ts[arrival[1:]] < seen[:-1]).sum())
            pushed, ready = window_for(asset).push_many(run_ts, rows[idx])
        results[start:end] = pushed
        accepted_runs.append((asset, idx[pushed != _LATE]))
        if ready.shape[0]:
            at = np.flatnonzero(pushed == _READY)
            windows.append(ready)
            assets.extend([asset] * ready.shape[0])
            ts_ready.append(run_ts[at])
            sources.append(idx[at])
    counts = np.bincount(results, minlength=len(PUSHES)).tolist()
    pushes = Counter({p.value: c for p, c in zip(PUSHES, counts, strict=True) if c})
    return Windowed(
        pushes=pushes,
        reordered=reordered,
        accepted=order[results != _LATE].tolist(),
        batch=np.concatenate(windows) if windows else empty,
        assets=assets,
        ts_ms=np.concatenate(ts_ready) if ts_ready else _NO_INTS,
        sources=np.concatenate(sources).astype(np.int64) if sources else _NO_INTS,
        columns=(ts, raw),
        accepted_runs=[(a, rows) for a, rows in accepted_runs if rows.size],
    )


def _window_runs(
    names: list[str],
    codes: npt.NDArray[np.int64],
    ts: npt.NDArray[np.int64],
    raw: npt.NDArray[np.float64],
    rows: npt.NDArray[np.float32],
    order: npt.NDArray[np.intp],
    starts: list[int],
    states: list[AssetWindow],
    empty: FloatArray,
) -> Windowed:
    """:func:`window_columns` with every asset's run pushed in one pass
    (:func:`stream.window.push_runs`): the same order, outcomes, windows and state."""
    n = len(names)
    sorted_ts = ts[order]
    pushed, ready, ends = push_runs(states, sorted_ts, rows[order], np.asarray(starts, np.int64))
    # Out of time order: older than a reading of its asset that arrived before it.
    arrival = np.lexsort((np.arange(n), codes))
    arrived_ts = ts[arrival]
    seg = codes[arrival]
    newest = in_segment_max(arrived_ts, seg)
    later = np.ones(n, np.bool_)
    later[1:] = seg[1:] != seg[:-1]
    reordered = int((~later[1:] & (arrived_ts[1:] < newest[:-1])).sum())
    accepted_sorted = pushed != _LATE
    accepted_runs: list[tuple[str, npt.NDArray[np.intp]]] = []
    bounds = [*starts[1:], n]
    for start, end in zip(starts, bounds, strict=True):
        idx = order[start:end]
        kept = idx[accepted_sorted[start:end]]
        if kept.size:
            accepted_runs.append((names[int(idx[0])], kept))
    counts = np.bincount(pushed, minlength=len(PUSHES)).tolist()
    pushes = Counter({p.value: c for p, c in zip(PUSHES, counts, strict=True) if c})
    sources = order[ends].astype(np.int64)
    return Windowed(
        pushes=pushes,
        reordered=reordered,
        accepted=order[accepted_sorted].tolist(),
        batch=ready if ready.shape[0] else empty,
        assets=[names[int(i)] for i in sources.tolist()],
        ts_ms=sorted_ts[ends] if ends.size else _NO_INTS,
        sources=sources if sources.size else _NO_INTS,
        columns=(ts, raw),
        accepted_runs=accepted_runs,
    )


def _push_one(
    state: AssetWindow, reading: SensorReading, empty: FloatArray
) -> tuple[npt.NDArray[np.int8], FloatArray]:
    """A run of one reading: :meth:`AssetWindow.push` costs less than the array set-up."""
    result = state.push(reading.ts_ms, reading.values)
    code = np.array([PUSHES.index(result)], np.int8)
    return code, state.window()[None].copy() if result is Push.READY else empty


def _time_order(readings: Sequence[SensorReading]) -> tuple[list[int], int]:
    """Indices grouped by asset, in time order within each; and how many were out of order."""
    newest: dict[str, int] = {}
    reordered = 0
    for r in readings:
        last = newest.get(r.asset)
        if last is not None and r.ts_ms < last:
            reordered += 1
        else:
            newest[r.asset] = r.ts_ms
    order = sorted(range(len(readings)), key=lambda i: (readings[i].asset, readings[i].ts_ms))
    return order, reordered
