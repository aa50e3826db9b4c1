"""Re-baselining: a principled way back when the plant moves to a new, steady operating point.

A model trained on last month's history flags a set-point change as long as it lasts, and
protection (nothing learned while an alert is open) then keeps the alert open for hours.
What tells a new operating point from a fault is the *shape* of the move: a set-point
change moves the signals together, the way they moved together in training, while a fault
breaks their relations (one signal shifts alone, a flow stops following its pressure).

So at training the principal subspace of the normalised readings is kept (the directions
that carry ``variance`` of their spread). Online, while an asset's alert is open, the
windows' mean levels are watched. When the level has been steady for ``stable_for_ms`` of
reading time (and at least ``min_windows`` windows) and its shift from the baseline lies
mostly *inside* that subspace (at most ``max_outside_fraction`` of it, by length, outside),
the inside part becomes the asset's new baseline offset: the readings are judged relative
to the new operating point from then on, the open alert is resolved with reason
``rebaselined``, and a notice says so. A shift largely outside the subspace (a broken
relation) is never absorbed, so a fault that shifts one signal stays alerted however long
it lasts. An operator can refuse re-baselining per asset.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> load = rng.normal(size=(2000, 1))
>>> training = np.hstack([load, 2 * load, -load]) + rng.normal(0, 0.05, (2000, 3))
>>> sub = BaselineSubspace.fit(training)
>>> sub.basis.shape  # one direction carries almost all the spread
(1, 3)
>>> sub.inside(np.array([1.0, 2.0, -1.0])).round(2).tolist()  # a set-point move: all of it
[1.0, 2.0, -1.0]
>>> sub.inside(np.array([0.0, 1.0, 0.0])).round(2).tolist()  # one signal alone: a third
[0.33, 0.67, -0.33]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from common.config import Config

SNAPSHOT_VERSION = 2
F64 = npt.NDArray[np.float64]
#: The share of normal one-window moves of the relations that stay under the jump scale,
#: and the margin on top: a fault's step is many times larger, a drift's far smaller.
JUMP_QUANTILE = 0.999
JUMP_MARGIN = 1.5


class RebaselineConfig(Config, frozen=True, kw_only=True):
    """When an open alert may end in a new baseline (see the module docstring)."""

    enabled: bool = True
    #: The level must have been steady this long (reading time) with the alert open.
    stable_for_ms: Annotated[int, msgspec.Meta(gt=0)] = 1_800_000
    #: ... and over at least this many scored windows (coarse data: 30 min is few readings).
    min_windows: Annotated[int, msgspec.Meta(ge=4)] = 30
    #: Steady: the two halves of that stretch differ by at most this fraction of the shift
    #: from the baseline (in normalised units, with a floor of 1).
    steady_fraction: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.1
    #: A new baseline only when at most this share of the shift (by length) lies outside
    #: the subspace: a move mostly along normal directions, not a broken relation.
    max_outside_fraction: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.25
    #: The subspace of normal moves: principal directions carrying this share of variance.
    variance: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.9
    #: Following slow drift of the relations (see :class:`DriftFollower`): the time
    #: constant, in reading time, of the exponential smoothing that follows the part of
    #: each asset's level the subspace does not explain; 0 turns following off.
    follow_ms: Annotated[int, msgspec.Meta(ge=0)] = 3_600_000
    #: Assets an operator does not allow to be re-baselined (their alerts stay open).
    refuse_assets: tuple[str, ...] = ()


@dataclass(frozen=True)
class BaselineSubspace:
    """Orthonormal rows spanning the directions normal operation moved in (normalised)."""

    basis: F64  # (k, signals), k < signals

    @classmethod
    def fit(cls, normalised: npt.ArrayLike, variance: float = 0.9) -> BaselineSubspace:
        x = np.asarray(normalised, dtype=np.float64)
        x = x[np.isfinite(x).all(axis=1)]
        n_signals = x.shape[1]
        if x.shape[0] < 2 or n_signals < 2:
            return cls(np.zeros((0, n_signals)))
        centred = x - x.mean(axis=0)
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        share = np.cumsum(singular**2) / max(float((singular**2).sum()), 1e-300)
        k = int(np.searchsorted(share, variance) + 1)
        # Never the whole space: some direction must stay a broken relation.
        k = min(k, n_signals - 1)
        return cls(np.ascontiguousarray(vt[:k]))

    def inside(self, shift: npt.ArrayLike) -> F64:
        """The part of ``shift`` (normalised units) that lies in the subspace."""
        v = np.asarray(shift, dtype=np.float64)
        return np.asarray(self.basis.T @ (self.basis @ v), dtype=np.float64)

    def outside(self, levels: npt.ArrayLike) -> F64:
        """The part of each row of ``levels`` (``(m, signals)``) the subspace does not hold:
        how far the relations between the signals are off."""
        v = np.asarray(levels, dtype=np.float64)
        # Products summed along fixed axes, not a matrix product: BLAS rounds a row
        # differently with the number of rows beside it, and a window's drift must not
        # depend on how its batch was cut (or on how many assets share the call).
        coef = (v[..., None, :] * self.basis).sum(axis=-1)
        inside = (coef[..., :, None] * self.basis).sum(axis=-2)
        return np.asarray(v - inside, dtype=np.float64)

    def to_json(self) -> list[list[float]]:
        return [[float(x) for x in row] for row in self.basis.tolist()]

    @classmethod
    def from_json(cls, rows: Any, n_signals: int) -> BaselineSubspace:
        basis = np.asarray(rows, dtype=np.float64).reshape(-1, n_signals)
        if not np.isfinite(basis).all():
            raise ValueError("baseline subspace holds non-finite numbers")
        return cls(basis)


@dataclass(frozen=True)
class FollowBasis:
    """What training tells the drift follower: how far the relation residual of the level
    (what the subspace does not hold, normalised units) moves within one window length in
    normal operation. Measured on the training rows between consecutive non-overlapping
    stretches of ``window`` rows, as the ``JUMP_QUANTILE`` of the move's length (``jump``)
    and of each signal's own part of it (``jumps``), times ``JUMP_MARGIN``; a move past
    either is a jump and is never followed.

    Both, because the length of a move over many signals dilutes one signal's step: among
    52 signals, a sensor that comes to read 8 of its noise-sd off lifts the residual's
    length little above what the other signals' noise moves it by, so most of the step's
    ramp into the window means passed as calm and was followed (the fault's alert ended
    within hours), while the signal's own part of the move stands far above its own normal
    moves. ``jumps`` is ``None`` in artifacts from before it: the length alone.
    """

    jump: float
    jumps: tuple[float, ...] | None = None

    @classmethod
    def fit(
        cls, blocks: Sequence[npt.ArrayLike], subspace: BaselineSubspace, window: int
    ) -> FollowBasis | None:
        """From the normalised training blocks; ``None`` without a subspace (one signal) or
        when no block spans two windows."""
        if not subspace.basis.shape[0]:
            return None
        w = max(1, int(window))
        moves: list[F64] = []
        for block in blocks:
            x = np.asarray(block, dtype=np.float64)
            if x.shape[0] < 2 * w:
                continue
            csum = np.cumsum(np.vstack([np.zeros((1, x.shape[1])), x]), axis=0)
            resid = subspace.outside((csum[w:] - csum[:-w]) / w)  # each stretch of w rows
            moves.append(resid[w:] - resid[:-w])
        found = np.concatenate(moves) if moves else np.zeros((0, subspace.basis.shape[1]))
        found = found[np.isfinite(found).all(axis=1)]
        if not found.shape[0]:
            return None
        length = np.quantile(np.linalg.norm(found, axis=1), JUMP_QUANTILE) * JUMP_MARGIN
        own = np.quantile(np.abs(found), JUMP_QUANTILE, axis=0) * JUMP_MARGIN
        return cls(float(length), tuple(float(v) for v in own))

    def calm(self, moves: F64) -> npt.NDArray[np.bool_]:
        """Per row of ``moves`` (residual moves over one window length, ``(m, signals)``):
        whether it is no jump, by its length and by each signal's own part."""
        ok = np.linalg.norm(moves, axis=1) <= self.jump
        if self.jumps is not None:
            ok &= (np.abs(moves) <= np.asarray(self.jumps, dtype=np.float64)).all(axis=1)
        return np.asarray(ok, dtype=np.bool_)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"jump": self.jump}
        if self.jumps is not None:
            out["jumps"] = list(self.jumps)
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], n_signals: int | None = None) -> FollowBasis:
        """Back from :meth:`to_json`, checked (``n_signals``: how many ``jumps`` to expect)."""
        jump = float(raw["jump"])
        if not (math.isfinite(jump) and jump >= 0):
            raise ValueError(f"drift following: jump scale {jump} is not a finite number >= 0")
        jumps: tuple[float, ...] | None = None
        if raw.get("jumps") is not None:
            jumps = tuple(float(v) for v in raw["jumps"])
            if n_signals is not None and len(jumps) != n_signals:
                raise ValueError(
                    f"drift following: {len(jumps)} per-signal jump scales for {n_signals} signals"
                )
            if not all(math.isfinite(v) and v >= 0 for v in jumps):
                raise ValueError("drift following: a per-signal jump scale is not a number >= 0")
        return cls(jump, jumps)


class DriftFollower:
    """Follows one asset's slow drift of the relations between its signals.

    A sensor that loses its calibration over hours, or a plant whose relations creep with
    wear, moves the relation residual of the level (what the subspace of normal moves does
    not hold) slowly; a fault or a step moves it at once. The follower keeps ``target``,
    the residual with every jump taken out (a move past the :class:`FollowBasis` scales
    within one window length adds nothing) and never beyond the residual the asset shows
    now (signal by signal, between zero and it), and ``offset``, an exponential smoothing of
    ``target`` with time constant ``follow_ms`` of reading time. The monitor judges each
    window relative to ``offset``: a slow drift is followed with a lag, a step is never
    followed and stays alerted as long as it lasts, a relation back in place is let go
    within the time constant, and moves along the subspace (the operating point) are left
    to the model and to re-baselining.
    """

    def __init__(self, n_signals: int, window: int) -> None:
        self.offset = np.zeros(n_signals, dtype=np.float64)
        self.target = np.zeros(n_signals, dtype=np.float64)
        self.window = max(1, int(window))
        #: The residuals of the last ``window`` windows (oldest first) and the newest time.
        self._recent = np.zeros((0, n_signals), dtype=np.float64)
        self._last_ts: int | None = None

    def follow(
        self,
        ts_ms: npt.NDArray[np.int64],
        levels: F64,
        subspace: BaselineSubspace,
        basis: FollowBasis,
        follow_ms: float,
    ) -> F64:
        """Feed one batch's windows of the asset (time order, levels before any offset);
        return the offset each of them is to be judged relative to (the one before it)."""
        ts = np.asarray(ts_ms, dtype=np.int64).reshape(-1)
        rows = np.asarray(levels, dtype=np.float64).reshape(ts.size, -1)
        return follow_runs([self], [(0, ts.size)], ts, rows, subspace, basis, follow_ms)

    def snapshot(self) -> dict[str, Any]:
        return {
            "offset": self.offset.tolist(),
            "target": self.target.tolist(),
            "recent": self._recent.tolist(),
            "last_ts": self._last_ts,
        }

    @classmethod
    def restore(cls, snap: Mapping[str, Any], n_signals: int, window: int) -> DriftFollower:
        follower = cls(n_signals, window)
        follower.offset = np.asarray(snap["offset"], dtype=np.float64).reshape(n_signals)
        follower.target = np.asarray(snap["target"], dtype=np.float64).reshape(n_signals)
        recent = np.asarray(snap["recent"], dtype=np.float64).reshape(-1, n_signals)
        follower._recent = recent[-follower.window :]
        last = snap.get("last_ts")
        follower._last_ts = None if last is None else int(last)
        parts = (follower.offset, follower.target, follower._recent)
        if not all(np.isfinite(a).all() for a in parts):
            raise ValueError("drift follower snapshot holds non-finite numbers")
        return follower


def follow_runs(
    followers: Sequence[DriftFollower],
    bounds: Sequence[tuple[int, int]],
    ts_ms: npt.NDArray[np.int64],
    levels: F64,
    subspace: BaselineSubspace,
    basis: FollowBasis,
    follow_ms: float,
) -> F64:
    """:meth:`DriftFollower.follow` for several assets' runs at once (``follow`` is this
    with one run): ``followers[k]`` takes the windows ``bounds[k]`` (start, end) of
    ``ts_ms`` and ``levels``; returns the offsets of every window (rows as ``levels``),
    the same as one ``follow`` per run, with the assets side by side: the jump test and
    the steps over all windows in one pass, the smoothing stepped once per position in
    the runs for every asset at it (a run holds a few windows; there are many assets)."""
    total, width = levels.shape
    offsets = np.zeros((total, width), dtype=np.float64)
    count = len(followers)
    if count == 0:
        return offsets
    lengths = np.array([b[1] - b[0] for b in bounds], np.int64)
    rows = np.concatenate([np.arange(a, b) for a, b in bounds]) if total else np.zeros(0, np.int64)
    if rows.size == 0:
        return offsets
    window = np.array([f.window for f in followers], np.int64)
    resid_all = subspace.outside(levels)
    # Each follower's recent residuals, then its run's: one block each in ``ext``.
    kept = np.array([f._recent.shape[0] for f in followers], np.int64)
    blocks = [part for f, (a, b) in zip(followers, bounds, strict=True)
              for part in (f._recent, resid_all[a:b])]  # fmt: skip
    ext = np.concatenate(blocks, axis=0) if blocks else np.zeros((0, width))
    base = np.concatenate([[0], np.cumsum(kept + lengths)[:-1]])
    k_of = np.repeat(np.arange(count), lengths)
    local = np.arange(rows.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    idx = base[k_of] + kept[k_of] + local
    back = base[k_of] + np.maximum(kept[k_of] + local - window[k_of], 0)
    prev = base[k_of] + np.maximum(kept[k_of] + local - 1, 0)
    calm = basis.calm(ext[idx] - ext[back])
    step = (ext[idx] - ext[prev]) * calm[:, None]
    resid = resid_all[rows]
    first = np.array([f._last_ts is None for f in followers])
    target = np.stack([f.target for f in followers])
    g = np.stack([f.offset for f in followers])
    head = np.cumsum(lengths) - lengths  # each run's first row in ``rows`` order
    ran = lengths > 0
    fresh = np.flatnonzero(first & ran)
    target[fresh] = resid[head[fresh]]
    step[head[fresh]] = 0.0
    times = ts_ms[rows].astype(np.float64)
    before = np.empty_like(times)
    before[1:] = times[:-1]
    last = np.array([0.0 if f._last_ts is None else float(f._last_ts) for f in followers])
    before[head[ran]] = np.where(first[ran], times[head[ran]], last[ran])
    alpha = -np.expm1(-np.clip(times - before, 0.0, None) / follow_ms)
    out = np.empty((rows.size, width), dtype=np.float64)
    for i in range(int(lengths.max())):
        at = np.flatnonzero(lengths > i)
        r = head[at] + i
        out[r] = g[at]
        now = resid[r]
        target[at] = np.clip(target[at] + step[r], np.minimum(now, 0.0), np.maximum(now, 0.0))
        g[at] = g[at] + alpha[r, None] * (target[at] - g[at])
    offsets[rows] = out
    ends = base + kept + lengths
    for k in np.flatnonzero(ran).tolist():
        f = followers[k]
        f.offset, f.target = g[k].copy(), target[k].copy()
        lo = max(int(base[k]), int(ends[k]) - f.window)
        f._recent = ext[lo : int(ends[k])].copy()
        f._last_ts = int(ts_ms[bounds[k][1] - 1])
    return offsets


class BaselineWatch:
    """One asset's baseline offset and the watch for a steady new level under an alert."""

    def __init__(self, n_signals: int) -> None:
        self.offset = np.zeros(n_signals, dtype=np.float64)
        #: The current stretch of windows under an open alert: reading times and levels.
        self._ts = np.zeros(0, np.int64)
        self._levels = np.zeros((0, n_signals))
        #: The slow drift of the relations followed, when following is on.
        self.follower: DriftFollower | None = None

    def observe(
        self,
        ts_ms: npt.NDArray[np.int64],
        levels: F64,
        alert_open: npt.NDArray[np.bool_],
        subspace: BaselineSubspace,
        config: RebaselineConfig,
        accept: Callable[[F64], bool] | None = None,
    ) -> int | None:
        """Feed one batch's windows of the asset (time order): reading time, mean level of
        each window (normalised, before the offset), whether its alert was open after it.

        ``accept(offset)``, when given, has the last word: whether the asset's newest
        window, judged relative to that offset, looks normal to the model (a candidate the
        model still finds abnormal is a fault, not a new operating point).

        Returns the reading time at which the asset was re-baselined, or ``None``.
        """
        if not config.enabled or subspace.basis.shape[0] == 0:
            return None
        # Only the windows after the last one with the alert not open extend the stretch.
        closed = np.flatnonzero(~np.asarray(alert_open, dtype=np.bool_))
        if closed.size:
            self._ts = np.zeros(0, np.int64)
            self._levels = np.zeros((0, self.offset.size))
        start = int(closed[-1]) + 1 if closed.size else 0
        self._ts = np.concatenate([self._ts, np.asarray(ts_ms[start:], np.int64)])
        self._levels = np.concatenate([self._levels, np.asarray(levels[start:], np.float64)])
        if not self._ts.size:
            return None
        now = int(self._ts[-1])
        # Keep just over one stretch of history; judge steadiness once per batch.
        old = np.flatnonzero(self._ts < now - config.stable_for_ms)
        drop = min(int(old[-1]) + 1 if old.size else 0, self._ts.size - config.min_windows)
        if drop > 0:
            self._ts, self._levels = self._ts[drop:], self._levels[drop:]
        if not self._steady(now, config):
            return None
        recent = self._levels[self._levels.shape[0] // 2 :].mean(axis=0)
        inside = subspace.inside(recent)
        outside = float(np.linalg.norm(recent - inside))
        if outside > config.max_outside_fraction * float(np.linalg.norm(recent - self.offset)):
            # A relation is broken (one signal moved alone): a fault, never a new baseline.
            return None
        if accept is not None and not accept(inside):
            return None
        self.offset = inside
        self._ts = np.zeros(0, np.int64)
        self._levels = np.zeros((0, self.offset.size))
        return now

    def _steady(self, now_ms: int, config: RebaselineConfig) -> bool:
        n = self._ts.size
        if n < config.min_windows or now_ms - int(self._ts[0]) < config.stable_for_ms:
            return False
        first, second = self._levels[: n // 2].mean(axis=0), self._levels[n // 2 :].mean(axis=0)
        shift = float(np.linalg.norm(second - self.offset))
        return float(np.linalg.norm(second - first)) <= config.steady_fraction * max(1.0, shift)

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "offset": self.offset.tolist(),
            "ts": self._ts.tolist(),
            "levels": self._levels.tolist(),
            "follow": None if self.follower is None else self.follower.snapshot(),
        }

    @classmethod
    def restore(
        cls, snap: Mapping[str, Any], n_signals: int, window: int | None = None
    ) -> BaselineWatch:
        """From :meth:`snapshot`; ``window`` is the model's when the monitor follows drift
        (``None``: it does not). A snapshot without a follower (made before drift
        following, or with it off) restores without one: it starts afresh."""
        if snap.get("v") not in (1, SNAPSHOT_VERSION):
            raise ValueError(f"baseline snapshot version {snap.get('v')} is not {SNAPSHOT_VERSION}")
        watch = cls(n_signals)
        if snap.get("follow") is not None and window is not None:
            watch.follower = DriftFollower.restore(snap["follow"], n_signals, window)
        offset = np.asarray(snap["offset"], dtype=np.float64)
        if offset.shape != (n_signals,) or not np.isfinite(offset).all():
            raise ValueError("baseline snapshot was made for another model (signals)")
        watch.offset = offset
        watch._ts = np.asarray(snap["ts"], dtype=np.int64).reshape(-1)
        watch._levels = np.asarray(snap["levels"], dtype=np.float64).reshape(-1, n_signals)
        if watch._ts.size != watch._levels.shape[0] or not np.isfinite(watch._levels).all():
            raise ValueError("baseline snapshot: times and levels differ in length or are damaged")
        return watch
