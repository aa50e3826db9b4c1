"""Per-asset stream state: cleaning and ring-buffer windows of normalised readings.

One :class:`AssetWindow` per asset holds the last ``window`` readings in the model's
signal order. Each reading is normalised once, on arrival. Cleaning rules, each counted:

- a missing value (absent or null) is carried forward from the signal's last value; once a
  signal has been carried for more than ``stale_limit`` readings the window is not scored
  (``stale``), and before a signal's first value it is not scored either (``missing``);
- a reading not newer than the asset's last one is dropped (``late``); readings are put in
  time order within a consumed batch before they get here, which re-orders small swaps;
- a gap longer than ``max_gap_ms`` empties the window (``gap_reset``): a window must not
  join two separate runs of the machine.

>>> import numpy as np
>>> w = AssetWindow(("a", "b"), window=2, stride=1, mean=np.zeros(2), scale=np.ones(2))
>>> w.push(1_000, {"a": 1.0, "b": 2.0}), w.push(2_000, {"a": 3.0, "b": None})
(<Push.WARMING_UP: 'warming_up'>, <Push.READY: 'ready'>)
>>> w.window().tolist()
[[1.0, 2.0], [3.0, 2.0]]
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

SNAPSHOT_VERSION = 1


class Push(enum.StrEnum):
    """What a reading did to its asset's window (the not-ready ones are counted)."""

    READY = "ready"
    WARMING_UP = "warming_up"
    STRIDE = "stride"
    STALE = "stale"
    MISSING = "missing"
    LATE = "late"


#: Every outcome, in the order :meth:`AssetWindow.push_many` numbers them.
PUSHES: tuple[Push, ...] = tuple(Push)
_CODE = {p: np.int8(i) for i, p in enumerate(PUSHES)}

#: Normalised readings are clipped to this magnitude (training spreads from the mean).
MAX_NORMALISED = 1e6


class AssetWindow:
    """Ring buffer of the last ``window`` normalised readings of one asset."""

    __slots__ = (
        "_buf",
        "_carried",
        "_filled",
        "_index",
        "_last",
        "_pos",
        "_since_ready",
        "gap_resets",
        "last_ts_ms",
        "max_gap_ms",
        "mean",
        "scale",
        "signals",
        "stale_limit",
        "stride",
        "window_size",
    )

    def __init__(
        self,
        signals: tuple[str, ...],
        *,
        window: int,
        stride: int,
        mean: npt.ArrayLike,
        scale: npt.ArrayLike,
        stale_limit: int = 5,
        max_gap_ms: int = 60_000,
    ) -> None:
        if window < 1 or stride < 1:
            raise ValueError(f"window ({window}) and stride ({stride}) must be at least 1")
        self.signals = signals
        self._index = {name: i for i, name in enumerate(signals)}
        self.window_size = window
        self.stride = stride
        # The model's normaliser, as plain arrays: this room knows nothing of models.
        self.mean = np.asarray(mean, dtype=np.float32).reshape(len(signals))
        self.scale = np.asarray(scale, dtype=np.float32).reshape(len(signals))
        self.stale_limit = stale_limit
        self.max_gap_ms = max_gap_ms
        n = len(signals)
        # Written twice, at pos and pos + window, so the current window is one contiguous
        # slice: no concatenation per scored window.
        self._buf = np.zeros((2 * window, n), dtype=np.float32)
        self._pos = 0
        self._filled = 0
        self._since_ready = 0
        self._last = np.full(n, np.nan, dtype=np.float32)
        self._carried = np.zeros(n, dtype=np.int64)
        self.last_ts_ms: int | None = None
        self.gap_resets = 0

    def reset(self) -> None:
        """Forget the window (not the last values, which still fill a short gap)."""
        self._filled = 0
        self._since_ready = 0

    def push(self, ts_ms: int, values: Mapping[str, float | None]) -> Push:
        """Add one reading; say whether a window is ready to score at this reading."""
        if self.last_ts_ms is not None:
            if ts_ms <= self.last_ts_ms:
                return Push.LATE
            if ts_ms - self.last_ts_ms > self.max_gap_ms:
                self.reset()
                self.gap_resets += 1
        self.last_ts_ms = ts_ms
        row = self._last.copy()
        fresh = np.zeros(len(self.signals), dtype=bool)
        index = self._index
        with np.errstate(over="ignore", invalid="ignore"):
            for name, value in values.items():
                i = index.get(name)
                if i is not None and value is not None and math.isfinite(value):
                    row[i] = value
                    fresh[i] = True
            overflow = np.isinf(row)
        if overflow.any():
            # A value the decoder let through that is infinite as a float32 (1e39): it
            # would poison every window it is in, so it counts as not sent.
            row = np.where(overflow, self._last, row)
            fresh &= ~overflow
        self._carried = np.where(fresh, 0, self._carried + 1)
        self._last = row
        if np.isnan(row).any():
            # A signal never seen yet: no window may contain this row, so the window
            # starts filling again after it.
            self.reset()
            return Push.MISSING
        # A reading a million training spreads away is already as abnormal as it gets;
        # beyond that a scorer's squares would overflow float32 into inf.
        with np.errstate(over="ignore"):
            normed = np.clip((row - self.mean) / self.scale, -MAX_NORMALISED, MAX_NORMALISED)
        self._buf[self._pos] = normed
        self._buf[self._pos + self.window_size] = normed
        self._pos = (self._pos + 1) % self.window_size
        just_full = self._filled == self.window_size - 1
        self._filled = min(self._filled + 1, self.window_size)
        self._since_ready += 1
        if self._filled < self.window_size:
            return Push.WARMING_UP
        if int(self._carried.max()) > self.stale_limit:
            return Push.STALE
        # The first full window is scored at once; later ones every ``stride`` readings.
        if self._since_ready < self.stride and not just_full:
            return Push.STRIDE
        self._since_ready = 0
        return Push.READY

    def push_many(
        self, ts_ms: npt.ArrayLike, rows: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
        """Add a run of readings at once; exactly :meth:`push` for each in order.

        ``ts_ms`` (n,) reading times, ``rows`` (n, signals) raw values in signal order, NaN
        (or any value not finite as a float32) where a reading lacks the signal. Returns
        what each reading did, as indices into :data:`PUSHES`, and the windows that became
        ready, (ready, window, signals) in reading order (copies, oldest reading first).

        The late, gap, carry-forward, missing and stale rules and the normalisation are
        array operations over the run (:func:`push_runs`, of one asset here); the windows
        are taken from the ring plus the new rows. A stride other than 1 makes readiness
        depend on each reading before it, so those readings go through :meth:`push` one
        by one.
        """
        ts = np.asarray(ts_ms, dtype=np.int64).reshape(-1)
        x = np.asarray(rows, dtype=np.float32)
        n, width = ts.shape[0], len(self.signals)
        if x.shape != (n, width):
            raise ValueError(f"rows must be ({n} readings, {width} signals), got {x.shape}")
        if self.stride != 1:
            return self._push_each(ts, x)
        codes, windows, _ = push_runs([self], ts, x, np.zeros(1, np.int64))
        return codes, windows

    def _push_each(
        self, ts: npt.NDArray[np.int64], x: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
        codes = np.empty(ts.shape[0], np.int8)
        windows: list[npt.NDArray[np.float32]] = []
        signals = self.signals
        for i, (t, row) in enumerate(zip(ts.tolist(), x.tolist(), strict=True)):
            values = {s: v for s, v in zip(signals, row, strict=True) if math.isfinite(v)}
            result = self.push(t, values)
            codes[i] = _CODE[result]
            if result is Push.READY:
                windows.append(self.window().copy())
        shape = (0, self.window_size, len(signals))
        return codes, np.stack(windows) if windows else np.zeros(shape, np.float32)

    def window(self) -> npt.NDArray[np.float32]:
        """The current window, oldest reading first (a view: copy it to keep it)."""
        return self._buf[self._pos : self._pos + self.window_size]

    def last_reading(self) -> npt.NDArray[np.float32]:
        """The newest normalised reading (carried values included)."""
        row: npt.NDArray[np.float32] = self._buf[(self._pos - 1) % self.window_size]
        return row

    def snapshot(self) -> dict[str, Any]:
        """Plain, versioned state; :meth:`restore` continues exactly from it."""
        order = [(self._pos + i) % self.window_size for i in range(self.window_size)]
        return {
            "v": SNAPSHOT_VERSION,
            "signals": list(self.signals),
            "window": self.window_size,
            "rows": self._buf[order].tolist(),
            "filled": self._filled,
            "since_ready": self._since_ready,
            "last": [None if math.isnan(v) else float(v) for v in self._last.tolist()],
            "carried": self._carried.tolist(),
            "last_ts_ms": self.last_ts_ms,
            "gap_resets": self.gap_resets,
        }

    def restore(self, snap: Mapping[str, Any]) -> None:
        """Load a :meth:`snapshot`; refuse one made for other signals or window length."""
        if snap.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"window snapshot version {snap.get('v')} is not {SNAPSHOT_VERSION}")
        if tuple(snap["signals"]) != self.signals or int(snap["window"]) != self.window_size:
            raise ValueError("window snapshot was made for another model (signals or window)")
        rows = np.asarray(snap["rows"], dtype=np.float32).reshape(self.window_size, -1)
        self._buf[: self.window_size] = rows
        self._buf[self.window_size :] = rows
        self._pos = 0
        self._filled = int(snap["filled"])
        self._since_ready = int(snap["since_ready"])
        self._last = np.asarray(
            [np.nan if v is None else v for v in snap["last"]], dtype=np.float32
        )
        self._carried = np.asarray(snap["carried"], dtype=np.int64)
        self.last_ts_ms = None if snap["last_ts_ms"] is None else int(snap["last_ts_ms"])
        self.gap_resets = int(snap["gap_resets"])


def in_segment_max(
    values: npt.NDArray[np.int64], seg: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Running maximum of ``values`` within each run of equal ``seg`` (non-decreasing)."""
    if values.size == 0:
        return values.copy()
    low = int(values.min())
    span = int(values.max()) - low + 1
    if span * (int(seg[-1]) + 1) >= 2**62:  # times too far apart to key by segment
        out = values.copy()
        bounds = np.flatnonzero(np.diff(seg)) + 1
        for part in np.split(np.arange(values.size), bounds):
            out[part] = np.maximum.accumulate(values[part])
        return out
    keyed = seg * span + (values - low)
    result: npt.NDArray[np.int64] = np.maximum.accumulate(keyed) - seg * span + low
    return result


def push_runs(
    states: list[AssetWindow],
    ts_ms: npt.NDArray[np.int64],
    rows: npt.NDArray[np.float32],
    starts: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """:meth:`AssetWindow.push_many` for several assets at once, in one pass of arrays
    (``push_many`` is this with one asset).

    ``states[k]`` takes the rows ``starts[k]:starts[k + 1]`` (the last to the end); every
    state has stride 1 and the same window length and signals. Returns each row's outcome
    (indices into :data:`PUSHES`), the windows that became ready, asset by asset in
    reading order, and the row each one ends at: the same outcomes, windows and state as
    ``push_many`` on each asset's run in turn, and as :meth:`AssetWindow.push` per
    reading (``tests/test_columnar.py``). The rules are the same array
    operations, taken within each asset's run (running maxima and sums restart at its
    first row and start from its carried state), so a batch costs a few dozen array calls
    in all instead of a few dozen per asset.
    """
    n = int(ts_ms.shape[0])
    count = len(states)
    size = states[0].window_size
    width = len(states[0].signals)
    codes = np.full(n, _CODE[Push.LATE], np.int8)
    no_windows = np.zeros((0, size, width), np.float32)
    if n == 0:
        return codes, no_windows, np.zeros(0, np.int64)
    lengths = np.diff(np.append(starts, n))
    seg = np.repeat(np.arange(count), lengths)
    never = np.iinfo(np.int64).min
    last_ts = np.array([never if s.last_ts_ms is None else s.last_ts_ms for s in states])
    has_last = last_ts != never
    max_gap = np.array([s.max_gap_ms for s in states], np.int64)
    stale_limit = np.array([s.stale_limit for s in states], np.int64)
    # Late: not newer than every reading of its asset before it (its clock is their max).
    running = in_segment_max(ts_ms, seg)
    before = np.empty(n, np.int64)
    before[1:] = running[:-1]
    before[starts[lengths > 0]] = never
    before = np.maximum(before, last_ts[seg])
    taken = np.flatnonzero(ts_ms > before)
    m = taken.size
    if m == 0:
        return codes, no_windows, np.zeros(0, np.int64)
    t = ts_ms[taken]
    sk = seg[taken]
    first = np.ones(m, np.bool_)
    first[1:] = sk[1:] != sk[:-1]
    seg_start = np.maximum.accumulate(np.where(first, np.arange(m), 0))
    gap = np.zeros(m, np.bool_)
    gap[1:] = np.diff(t) > max_gap[sk[1:]]
    at_first = sk[first]
    prior = np.where(has_last, last_ts, 0)[at_first]
    gap[first] = has_last[at_first] & (t[first] - prior > max_gap[at_first])
    # Carry forward: each cell's latest fresh value in its asset's run, and readings since.
    cells = rows[taken]
    fresh = np.isfinite(cells)
    step = np.arange(m)[:, None]
    latest = np.maximum.accumulate(np.where(fresh, step, -1), axis=0)
    seen = latest >= seg_start[:, None]
    at = np.maximum(latest, 0)
    last_values = np.stack([s._last for s in states])
    carried0 = np.stack([s._carried for s in states])
    filled_rows = np.where(seen, np.take_along_axis(cells, at, axis=0), last_values[sk])
    local = np.arange(m) - seg_start
    carried = np.where(seen, step - latest, carried0[sk] + local[:, None] + 1)
    missing = np.asarray(np.isnan(filled_rows).any(axis=1), np.bool_)
    valid = ~missing
    # How full each asset's window is at each reading (as push_many, within its run).
    restart = gap.copy()
    restart[1:] |= missing[:-1] & ~first[1:]
    total = np.cumsum(valid)
    counted: npt.NDArray[np.int64] = total - (total[seg_start] - valid[seg_start])
    last_restart = np.maximum.accumulate(np.where(restart, np.arange(m), -1))
    restarted = last_restart >= seg_start
    lr = np.maximum(last_restart, 0)
    since = np.where(restarted, counted - (counted - valid)[lr], 0)
    filled0 = np.array([s._filled for s in states], np.int64)
    fill = np.where(restarted, since, filled0[sk] + counted)
    stale = carried.max(axis=1) > stale_limit[sk]
    full = valid & (fill >= size)
    ready = full & ~stale
    outcome = np.where(stale, _CODE[Push.STALE], _CODE[Push.READY])
    outcome = np.where(full, outcome, _CODE[Push.WARMING_UP])
    codes[taken] = np.where(missing, _CODE[Push.MISSING], outcome)
    # Each asset's ring, then its normalised valid rows, all in one array.
    mean = np.stack([s.mean for s in states])
    scale = np.stack([s.scale for s in states])
    vk = sk[valid]
    with np.errstate(over="ignore"):
        normed = np.clip(
            (filled_rows[valid] - mean[vk]) / scale[vk], -MAX_NORMALISED, MAX_NORMALISED
        )
    nv = int(normed.shape[0])
    valid_before = np.concatenate([[0], np.cumsum(np.bincount(vk, minlength=count))])
    rings = np.stack([s._buf[s._pos : s._pos + size] for s in states])
    ext = np.empty((count * size + nv, width), np.float32)
    ring_at = (np.arange(count) * size + valid_before[:-1])[:, None] + np.arange(size)
    ext[ring_at.reshape(-1)] = rings.reshape(-1, width)
    ext[(vk + 1) * size + np.arange(nv)] = normed
    # The valid row j of asset k sits at ext[(k + 1) * size + j]: its window starts at
    # k * size + j + 1.
    ready_valid = np.flatnonzero(ready[valid])
    views = np.lib.stride_tricks.sliding_window_view(ext, size, axis=0)
    windows = np.ascontiguousarray(
        views[vk[ready_valid] * size + ready_valid + 1].transpose(0, 2, 1)
    )
    ends = taken[np.flatnonzero(valid)[ready_valid]]
    # The state after each asset's last reading, as push_many leaves it.
    ends_at = (np.arange(count) + 1) * size + valid_before[1:]
    tails = ext[(ends_at - size)[:, None] + np.arange(size)]
    pushed = np.bincount(sk, minlength=count)
    last_row = np.cumsum(pushed) - 1
    gaps = np.bincount(sk, weights=gap, minlength=count)
    # Readings since the last ready window or reset (what a stride counts), per asset: from
    # the reading after a ready or missing one, or from a reading a gap came before.
    after = np.full(count, -1, np.int64)
    np.maximum.at(after, sk, np.where(ready | missing, local + 1, -1))
    gap_at = np.full(count, -1, np.int64)
    np.maximum.at(gap_at, sk, np.where(gap, local, -1))
    begin = np.maximum(after, gap_at)
    from_begin = valid & (local >= begin[sk])
    counted_since = np.bincount(sk, weights=from_begin, minlength=count).astype(np.int64)
    for k in np.flatnonzero(pushed).tolist():
        state = states[k]
        r = int(last_row[k])
        state._buf[:size] = tails[k]
        state._buf[size:] = tails[k]
        state._pos = 0
        state.gap_resets += int(gaps[k])
        state.last_ts_ms = int(t[r])
        state._last = filled_rows[r].copy()
        state._carried = carried[r].astype(np.int64)
        state._filled = 0 if missing[r] else int(min(fill[r], size))
        add = int(counted_since[k])
        state._since_ready = add if begin[k] >= 0 else state._since_ready + add
    return codes, windows, ends
